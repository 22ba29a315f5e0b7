"""Snapshots and restores on a real engine: PostgreSQL 15 with TimescaleDB (the stand-in carries the
host's), Redis, the data a seeded stack holds. The checks here are the test's own (md5 of the
ordered rows, chunk by chunk, job by job), not qbctl's inventory. Where the stand-in has no TimescaleDB
(a new machine: it is not packaged) the same tests run on the plain schema, and only what needs the
extension (compressed chunks, jobs) is left out."""

from __future__ import annotations

import json
import shutil
import subprocess

import psycopg
import pytest
import redis

from tests.helpers import ROOT, missing, new_project, no_traceback, qbctl, remove_stack, stack_env

pytestmark = pytest.mark.docker


def pg(env, db=None):
    url = env["DATABASE_URL"].replace("localhost", "127.0.0.1")
    if db:
        url = url.rsplit("/", 1)[0] + "/" + db
    return psycopg.connect(url, autocommit=True)


def rd(env):
    return redis.Redis.from_url(env["REDIS_URL"].replace("localhost", "127.0.0.1"))


def fingerprint(env, db=None) -> dict:
    """Everything a restore must bring back, read independently of qbctl."""
    with pg(env, db) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        out = {}
        for (table,) in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname"
            " IN ('public', 'qbctl') ORDER BY 1"
        ).fetchall():
            out[table] = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(CAST(r.* AS text), '|' ORDER BY"
                f" CAST(r.* AS text)), '')) FROM {table} AS r"
            ).fetchone()
        if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]:
            out["hypertables"] = conn.execute(
                "SELECT hypertable_name, num_chunks, compression_enabled FROM timescaledb_information.hypertables"
                " ORDER BY 1"
            ).fetchall()
            out["chunks"] = conn.execute(
                "SELECT hypertable_name, chunk_name, is_compressed, range_start, range_end"
                " FROM timescaledb_information.chunks ORDER BY 1, 2"
            ).fetchall()
            out["jobs"] = conn.execute(
                "SELECT job_id, proc_name, hypertable_name, schedule_interval, config::text, scheduled"
                " FROM timescaledb_information.jobs ORDER BY 1"
            ).fetchall()
    out["redis"] = redis_state(rd(env))
    return out


def redis_state(r) -> dict:
    read = {
        "string": r.get,
        "hash": r.hgetall,
        "list": lambda k: r.lrange(k, 0, -1),
        "set": lambda k: sorted(r.smembers(k)),
        "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
    }
    out = {}
    for key in sorted(r.keys()):
        kind = r.type(key).decode()
        out[key] = (kind, read[kind](key))
    return out


def databases(env) -> list[str]:
    with pg(env, "postgres") as conn:
        return [d for (d,) in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")]


def ok(proc):
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def stack(docker_client, tmp_path_factory, standin_timescaledb, schema_flags):
    """One stack, migrated and seeded (12 days: chunks old enough to compress): the QB schema with
    TimescaleDB where the stand-in carries it, else the plain one."""
    env = stack_env(new_project())
    cwd = tmp_path_factory.mktemp("snapshots")
    shutil.copytree(ROOT / "sql", cwd / "sql")
    try:  # removed even when a step here fails: a fixture that fails before its yield gets no teardown
        ok(qbctl("up", "--no-ui", env=env, cwd=cwd))
        migrated = ok(qbctl("db", "migrate", *schema_flags, "--json", env=env, cwd=cwd))
        assert bool(json.loads(migrated.stdout)["timescaledb"]) == standin_timescaledb, migrated.stdout
        ok(qbctl("db", "seed", "--symbols", "3", "--days", "12", env=env, cwd=cwd))
        yield env, cwd
    finally:
        remove_stack(env, cwd)


def test_snapshot_change_restore_gives_back_the_same_data(stack, docker_client, standin_timescaledb):
    env, cwd = stack
    tsdb = standin_timescaledb
    if tsdb:
        with pg(env) as conn:  # compression state is part of what must come back
            (chunk,) = conn.execute(
                "SELECT format('%I.%I', chunk_schema, chunk_name) FROM"
                " timescaledb_information.chunks WHERE hypertable_name = 'market_data' AND NOT"
                " is_compressed ORDER BY range_start LIMIT 1"
            ).fetchone()
            conn.execute(f"SELECT compress_chunk('{chunk}')")
    before = fingerprint(env)
    assert before["redis"] and before["public.market_data"][0] > 10_000
    assert not tsdb or (any(c[2] for c in before["chunks"]) and before["jobs"])
    taken = ok(qbctl("snapshot", "base", "--json", env=env, cwd=cwd))
    snap = json.loads(taken.stdout)
    assert snap["ok"] and snap["name"] == "base" and snap["postgres"]["rows"] > 10_000
    assert snap["restore_command"] == "qbctl restore base"
    meta = json.loads((cwd / ".qbctl" / "snapshots" / "base" / "meta.json").read_text())
    if tsdb:
        compressed = sum(1 for c in before["chunks"] if c[0] == "market_data" and c[2])  # the policy may have run
        assert (
            meta["postgres"]["timescaledb"]
            and meta["postgres"]["hypertables"]["public.market_data"]["compressed_chunks"] == compressed >= 1
        )
    else:
        assert not meta["postgres"]["timescaledb"] and not meta["postgres"]["hypertables"]
    assert sorted(meta["files"]) == ["postgres.dump", "postgres.tar", "redis.rdb"]  # named: both forms
    assert snap["forms"] == ["logical", "physical"]

    with pg(env) as conn:  # change rows, compression and a job; and Redis
        if tsdb:
            conn.execute(f"SELECT decompress_chunk('{chunk}')")
            conn.execute(
                "SELECT alter_job(job_id, schedule_interval => interval '5 hours') FROM"
                " timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
            )
        conn.execute("DELETE FROM market_data WHERE symbol = '005930'")
        conn.execute(
            "INSERT INTO orders (symbol, side, order_type, quantity, price, status, strategy)"
            " VALUES ('000660', 'buy', 'limit', 1, 1, 'pending', 'manual')"
        )
    rd(env).set("stray", "1")
    rd(env).delete("market:005930")
    changed = fingerprint(env)
    assert changed != before

    restored = ok(qbctl("restore", "base", "--yes", "--json", env=env, cwd=cwd))
    result = json.loads(restored.stdout)
    assert result["ok"] and result["postgres"]["rows"] == snap["postgres"]["rows"]
    assert result["postgres"]["form"] == "physical"  # the data directory: same major, same TimescaleDB (or none)
    assert fingerprint(env) == before
    assert databases(env) == ["postgres", env["DATABASE_URL"].rsplit("/", 1)[1]]  # nothing left behind
    leftovers = (
        docker_client.containers.get(f"{env['QBCTL_PROJECT']}-postgres")
        .exec_run(["ls", "-a", "/var/lib/postgresql/data"])
        .output.decode()
    )
    assert ".qbctl-replaced" not in leftovers and "PG_VERSION" in leftovers
    # The data it replaced was snapshotted first (the dump only), and restores too.
    safety = result["safety_snapshot"]
    assert safety and safety.startswith("auto-restore-")
    back = ok(qbctl("restore", safety, "--yes", "--no-snapshot", "--json", env=env, cwd=cwd))
    assert json.loads(back.stdout)["postgres"]["form"] == "logical"
    assert fingerprint(env) == changed
    again = ok(qbctl("restore", "base", "--yes", "--no-snapshot", "--logical", "--json", env=env, cwd=cwd))
    assert json.loads(again.stdout)["postgres"]["form"] == "logical"
    assert fingerprint(env) == before


def test_a_damaged_or_partial_snapshot_is_refused_and_the_data_stays(stack):
    env, cwd = stack
    folder = cwd / ".qbctl" / "snapshots"
    if not (folder / "base").exists():
        ok(qbctl("snapshot", "base", env=env, cwd=cwd))
    with pg(env) as conn:
        conn.execute("DELETE FROM trades WHERE id IN (SELECT id FROM trades LIMIT 3)")
    now = fingerprint(env)
    cases = {
        "flipped": lambda p: _flip(p / "postgres.dump"),
        "flipped-copy": lambda p: _flip(p / "postgres.tar"),
        "cut": lambda p: _cut(p / "redis.rdb"),
        "no-meta": lambda p: (p / "meta.json").unlink(),
    }
    for name, damage in cases.items():
        shutil.copytree(folder / "base", folder / name)
        damage(folder / name)
        proc = qbctl("restore", name, "--yes", "--json", env=env, cwd=cwd)
        no_traceback(proc)
        assert proc.returncode == 1, (name, proc.stdout)
        err = json.loads(proc.stdout)["error"]
        assert err["code"] == "SNAPSHOT_DAMAGED" and "nothing was changed" in err["message"] + err.get("hint", "")
        human = qbctl("restore", name, "--yes", env=env, cwd=cwd)
        assert human.returncode == 1 and human.stderr.count("error:") == 1, human.stderr
    assert fingerprint(env) == now
    assert not [d for d in databases(env) if "qbctl" in d]
    listed = json.loads(ok(qbctl("snapshot", "list", "--json", env=env, cwd=cwd)).stdout)["snapshots"]
    assert "no meta.json" in next(s for s in listed if s["name"] == "no-meta")["problem"]
    (folder / ".tmp-half-123").mkdir()  # a snapshot being written is never listed
    listed = json.loads(ok(qbctl("snapshot", "list", "--json", env=env, cwd=cwd)).stdout)["snapshots"]
    assert ".tmp-half-123" not in [s["name"] for s in listed]
    for name in cases:
        ok(qbctl("snapshot", "rm", name, env=env, cwd=cwd))

    # Files intact but the data not what the snapshot says: the copy of the data directory is tried, found
    # different and put back; the dump is loaded into a new database, found different and dropped.
    shutil.copytree(folder / "base", folder / "lying")
    meta = json.loads((folder / "lying" / "meta.json").read_text())
    meta["postgres"]["tables"]["public.market_data"]["rows"] += 1
    (folder / "lying" / "meta.json").write_text(json.dumps(meta))
    proc = qbctl("restore", "lying", "--yes", "--no-snapshot", "--json", env=env, cwd=cwd)
    no_traceback(proc)
    assert proc.returncode == 1, proc.stdout
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "RESTORE_VERIFY_FAILED" and "public.market_data" in err["message"]
    assert "the running data was not touched" in err["message"]
    assert fingerprint(env) == now
    assert not [d for d in databases(env) if "qbctl" in d]
    ok(qbctl("snapshot", "rm", "lying", env=env, cwd=cwd))


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_bad_input_is_one_line_and_changes_nothing(stack, docker_client):
    env, cwd = stack
    if not (cwd / ".qbctl" / "snapshots" / "base").exists():
        ok(qbctl("snapshot", "base", env=env, cwd=cwd))
    now = fingerprint(env)
    other_user = {**env, "DATABASE_URL": env["DATABASE_URL"].replace("qb_user:", "someone_else:")}
    proc = qbctl("restore", "base", "--yes", env=other_user, cwd=cwd)
    assert proc.returncode == 1 and proc.stderr.startswith(
        "error: snapshot base was taken as PostgreSQL user qb_user, this stack logs in as someone_else"
    )
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]) == 1
    for args, code, text in (
        (["restore", "nope", "--yes"], 2, "no snapshot named nope"),
        (["snapshot", "bad/name"], 2, "snapshot name 'bad/name'"),
        (["snapshot", "base"], 2, "a snapshot named base exists already"),
        (["snapshot", "rm", "nope"], 2, "no snapshot named nope"),
        (["restore", "base"], 4, "needs confirmation"),
    ):
        proc = qbctl(*args, env=env, cwd=cwd, input="")  # no terminal to confirm on
        no_traceback(proc)
        assert proc.returncode == code and text in proc.stderr, (args, proc.stderr)
    assert fingerprint(env) == now

    # Another database name: restored into the one DATABASE_URL names, and said so.
    other_db = {**env, "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/qb_other"}
    proc = ok(qbctl("restore", "base", "--yes", "--no-snapshot", env=other_db, cwd=cwd))
    assert "note: the snapshot is of database qb_trading_dev; restored into qb_other" in proc.stdout
    base = json.loads((cwd / ".qbctl" / "snapshots" / "base" / "meta.json").read_text())["postgres"]["tables"]
    with pg(env, "qb_other") as conn:
        assert conn.execute("SELECT count(*) FROM market_data").fetchone()[0] == base["public.market_data"]["rows"]
    # A database the copy of the data directory does not hold would go with it: the dump is used instead.
    proc = ok(qbctl("restore", "base", "--yes", "--no-snapshot", "--json", env=env, cwd=cwd))
    result = json.loads(proc.stdout)
    assert result["postgres"]["form"] == "logical" and "qb_other" in " ".join(result["notes"])
    assert "qb_other" in databases(env)
    restored = fingerprint(env)
    assert {name: restored[name][0] for name in base} == {name: v["rows"] for name, v in base.items()}
    with pg(env, "postgres") as conn:
        conn.execute("DROP DATABASE qb_other WITH (FORCE)")

    # What a restore killed between its renames and its check leaves is never deleted: the dump is used.
    server = docker_client.containers.get(f"{env['QBCTL_PROJECT']}-postgres")
    assert (
        server.exec_run(
            [
                "sh",
                "-c",
                "mkdir /var/lib/postgresql/data/.qbctl-replaced && echo kept > "
                "/var/lib/postgresql/data/.qbctl-replaced/PG_VERSION",
            ]
        ).exit_code
        == 0
    )
    proc = ok(qbctl("restore", "base", "--yes", "--no-snapshot", "--json", env=env, cwd=cwd))
    result = json.loads(proc.stdout)
    assert result["postgres"]["form"] == "logical" and ".qbctl-replaced" in " ".join(result["notes"])
    kept = server.exec_run(["cat", "/var/lib/postgresql/data/.qbctl-replaced/PG_VERSION"])
    assert kept.exit_code == 0 and kept.output == b"kept\n"
    server.exec_run(["rm", "-rf", "/var/lib/postgresql/data/.qbctl-replaced"])


def test_a_stopped_stack_is_snapshotted_through_a_temporary_container(stack, docker_client):
    env, cwd = stack
    now = fingerprint(env)
    ok(qbctl("down", env=env, cwd=cwd))
    proc = ok(qbctl("snapshot", "stopped", "--json", env=env, cwd=cwd))
    assert json.loads(proc.stdout)["postgres"]["rows"] > 10_000
    label = {"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}
    assert docker_client.containers.list(all=True, filters=label) == []  # the temporary ones are gone
    ok(qbctl("up", "--no-ui", env=env, cwd=cwd))
    assert fingerprint(env) == now
    with pg(env) as conn:
        conn.execute("TRUNCATE system_logs")
    ok(qbctl("restore", "stopped", "--yes", "--no-snapshot", env=env, cwd=cwd))
    assert fingerprint(env) == now


def test_no_space_for_the_snapshot_stops_the_reset_before_anything_is_removed(stack, docker_client, tmp_path):
    env, cwd = stack
    folder = cwd / ".qbctl" / "snapshots"
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        missing(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    moved = cwd / "snapshots-aside"
    label = {"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        folder.rename(moved)
        folder.symlink_to(small)
        before = sorted(c.name for c in docker_client.containers.list(all=True, filters=label))
        proc = qbctl("reset", "--yes", "--json", env=env, cwd=cwd)
        no_traceback(proc)
        assert proc.returncode == 3, proc.stdout
        err = json.loads(proc.stdout)["error"]
        assert err["code"] == "NO_SPACE" and "nothing was deleted" in err["message"]
        assert "--no-snapshot" in err["hint"]
        assert sorted(c.name for c in docker_client.containers.list(all=True, filters=label)) == before
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
        if folder.is_symlink():
            folder.unlink()
        if moved.exists():
            moved.rename(folder)
    assert {c.labels["io.qbctl.service"]: c.status for c in docker_client.containers.list(filters=label)} == {
        "postgres": "running",
        "redis": "running",
    }


def test_db_reset_snapshots_first_and_old_automatic_snapshots_are_pruned(stack, schema_flags):
    env, cwd = stack
    keep = {**env, "QBCTL_SNAPSHOT_KEEP": "2"}
    taken = []
    for _ in range(3):
        proc = ok(qbctl("db", "reset", "--yes", *schema_flags, "--json", env=keep, cwd=cwd))
        result = json.loads(proc.stdout)
        assert result["snapshot"].startswith("auto-db-reset-")
        taken.append(result["snapshot"])
        human = qbctl("snapshot", "list", env=keep, cwd=cwd).stdout
        assert result["snapshot"] in human
    names = [
        s["name"] for s in json.loads(ok(qbctl("snapshot", "list", "--json", env=keep, cwd=cwd)).stdout)["snapshots"]
    ]
    automatic = [n for n in names if n.startswith("auto-")]
    assert automatic == taken[-2:], names  # the oldest went; named ones stay
    assert "base" in names and "stopped" in names
    ok(qbctl("db", "reset", "--yes", "--no-snapshot", *schema_flags, env=keep, cwd=cwd))
    names_after = [
        s["name"] for s in json.loads(qbctl("snapshot", "list", "--json", env=keep, cwd=cwd).stdout)["snapshots"]
    ]
    assert names_after == names  # --no-snapshot: none taken
    ok(qbctl("restore", "base", "--yes", "--no-snapshot", env=env, cwd=cwd))


def test_reset_leaves_a_snapshot_that_restores_the_stack(stack, docker_client):
    env, cwd = stack
    before = fingerprint(env)
    proc = ok(qbctl("reset", "--yes", env=env, cwd=cwd))
    name = proc.stdout.split("snapshot ", 1)[1].split()[0]
    assert name.startswith("auto-reset-") and f"`qbctl restore {name}` brings it back" in proc.stdout
    label = {"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}
    assert docker_client.volumes.list(filters=label) == []
    proc = ok(qbctl("restore", name, "--yes", env=env, cwd=cwd))  # brings postgres and redis up first
    assert "no snapshot of the current data first" in proc.stdout
    assert fingerprint(env) == before


def test_a_stack_whose_password_changed_is_still_saved_by_reset_and_restored_with_the_new_one(project_env, tmp_path):
    env = project_env
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    ok(qbctl("up", "--no-ui", env=env, cwd=tmp_path))
    ok(qbctl("db", "migrate", "--without-timescaledb", env=env, cwd=tmp_path))
    ok(qbctl("db", "seed", "--symbols", "2", "--days", "3", env=env, cwd=tmp_path))
    before = fingerprint(env)
    moved = {**env, "DATABASE_URL": env["DATABASE_URL"].replace(":s3cret-Pw-for-tests@", ":another-Pw-2@")}
    refused = qbctl("db", "status", env=moved, cwd=tmp_path)
    assert refused.returncode == 3 and "password authentication failed" in refused.stderr
    proc = ok(qbctl("reset", "--yes", "--json", env=moved, cwd=tmp_path))  # the README's way out
    name = json.loads(proc.stdout)["snapshot"]
    assert name and name.startswith("auto-reset-")
    restored = ok(qbctl("restore", name, "--yes", env=moved, cwd=tmp_path))
    assert "restored" in restored.stdout
    assert fingerprint(moved) == before
    assert "another-Pw-2" not in proc.stdout + proc.stderr + restored.stdout + restored.stderr


def test_ctrl_c_in_the_middle_of_the_switch_puts_the_old_data_back(stack, docker_client):
    """SIGINT the moment the old data directory is set aside (the server stopped, the copy moving in):
    the old data is back in place and served, nothing is left in the volume, and a restore runs again."""
    import signal
    import sys
    import time

    from tests.helpers import ROOT

    env, cwd = stack
    ok(qbctl("snapshot", "switch", env=env, cwd=cwd))
    with pg(env) as conn:
        conn.execute("DELETE FROM market_data WHERE symbol = '000660'")
    changed = fingerprint(env)
    container = docker_client.containers.get(f"{env['QBCTL_PROJECT']}-postgres")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "restore", "switch", "--yes", "--no-snapshot"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            listing = container.exec_run(["ls", "-a", "/var/lib/postgresql/data"]).output.decode()
        except Exception:  # noqa: BLE001 - the container is stopped for the renames: keep looking
            listing = ""
        if ".qbctl-replaced" in listing:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the restore never set the old data aside")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    left = container.exec_run(["ls", "-a", "/var/lib/postgresql/data"]).output.decode()
    assert ".qbctl-replaced" not in left and ".qbctl-incoming" not in left and "PG_VERSION" in left
    after = fingerprint(env)
    assert after == changed  # the old data, served again
    back = json.loads(ok(qbctl("restore", "switch", "--yes", "--no-snapshot", "--json", env=env, cwd=cwd)).stdout)
    assert back["postgres"]["form"] == "physical"  # no leftover made it fall back to the dump


def test_a_schema_of_every_awkward_name_and_type_round_trips_in_both_forms(project_env, tmp_path):
    """The column x that once stopped every snapshot, the table t, reserved words, quoted names, a second
    schema, enums, domains, a composite, xml/point/box/json, generated and dropped columns, no columns,
    unlogged and partitioned tables, a sequence (tests/awkward.py), under a search_path that leaves out
    TimescaleDB's schema and puts first functions named like the catalog's and TimescaleDB's that fail when
    called: snapshot, restore from the data directory and from the dump, reset and db reset with their
    snapshots, each checked row by row."""
    from tests import awkward

    env, cwd = project_env, tmp_path
    shutil.copytree(ROOT / "sql", cwd / "sql")
    ok(qbctl("up", "--no-ui", env=env, cwd=cwd))
    migrated = qbctl("db", "migrate", "--json", env=env, cwd=cwd)
    tsdb = migrated.returncode == 0
    plain = [] if tsdb else ["--without-timescaledb"]
    if not tsdb:  # the stand-in has no TimescaleDB: the plain schema, and the awkward one without a hypertable
        assert json.loads(migrated.stdout)["error"]["code"] == "TIMESCALEDB_UNAVAILABLE", migrated.stdout
        ok(qbctl("db", "migrate", *plain, env=env, cwd=cwd))
    with pg(env) as conn:
        conn.execute(awkward.SCHEMA)
        if tsdb:
            conn.execute(awkward.TIMESCALE)
        conn.execute(f"ALTER ROLE qb_user SET search_path = {awkward.SHADOWING_PATH}")  # until the reset

    def fingerprint_now():
        with pg(env) as conn:
            return awkward.fingerprint(conn)

    def change():
        with pg(env) as conn:
            conn.execute(
                'SET search_path = public; DELETE FROM t WHERE x > 10; UPDATE "order" SET "from" = NULL;'
                ' DROP TABLE "a.b".c; INSERT INTO nocols DEFAULT VALUES;'
                " UPDATE types SET doc = NULL, pt = NULL; DELETE FROM moods WHERE v < 5;"
                ' SELECT nextval(\'"Other Schema"."Seq"\')'
            )
        assert fingerprint_now() != before

    before = fingerprint_now()
    assert before["public.t"][1:2] == (50,) and before['"a.b".c'][1:2] == (3,)
    taken = json.loads(ok(qbctl("snapshot", "awkward", "--json", env=env, cwd=cwd)).stdout)
    assert taken["forms"] == ["logical", "physical"], taken["notes"]
    tables = json.loads((cwd / ".qbctl" / "snapshots" / "awkward" / "meta.json").read_text())["postgres"]["tables"]
    assert {k: tables[k]["rows"] for k in awkward.ROWS} == awkward.ROWS
    assert tables["public.t"]["hash"] == tables["public.x"]["hash"] == "record"
    assert tables["public.types"]["hash"] == tables["public.moods"]["hash"] == "text"
    if tsdb:
        assert tables[awkward.TIMESCALE_TABLE]["rows"] == 100

    change()
    restored = json.loads(ok(qbctl("restore", "awkward", "--yes", "--json", env=env, cwd=cwd)).stdout)
    assert restored["postgres"]["form"] == "physical", restored["notes"]
    assert fingerprint_now() == before
    change()
    restored = json.loads(
        ok(qbctl("restore", "awkward", "--yes", "--no-snapshot", "--logical", "--json", env=env, cwd=cwd)).stdout
    )
    assert restored["postgres"]["form"] == "logical"
    assert fingerprint_now() == before

    # Rows in an unlogged table: a copy of the data directory never holds them, so the snapshot is the dump.
    with pg(env) as conn:
        conn.execute("INSERT INTO public.scratch SELECT g, 'note ' || g FROM generate_series(1, 5) g")
    with_scratch = fingerprint_now()
    taken = json.loads(ok(qbctl("snapshot", "unlogged", "--json", env=env, cwd=cwd)).stdout)
    assert taken["forms"] == ["logical"] and "public.scratch" in " ".join(taken["notes"]), taken
    with pg(env) as conn:
        conn.execute("TRUNCATE public.scratch")
    restored = json.loads(ok(qbctl("restore", "unlogged", "--yes", "--no-snapshot", "--json", env=env, cwd=cwd)).stdout)
    assert restored["postgres"]["form"] == "logical"
    assert fingerprint_now() == with_scratch

    # reset: the snapshot first, then the containers and volumes go; the restore starts the stack again.
    proc = ok(qbctl("reset", "--yes", "--json", env=env, cwd=cwd))
    name = json.loads(proc.stdout)["snapshot"]
    assert name.startswith("auto-reset-")
    ok(qbctl("restore", name, "--yes", env=env, cwd=cwd))
    assert fingerprint_now() == with_scratch

    # db reset (after the reset: it migrates, which the user's search_path above would steer) snapshots the
    # data first (the dump), then empties the database; that snapshot brings it all back.
    emptied = json.loads(ok(qbctl("db", "reset", "--yes", "--json", *plain, env=env, cwd=cwd)).stdout)
    assert emptied["snapshot"].startswith("auto-db-reset-")
    assert fingerprint_now() != with_scratch
    ok(qbctl("restore", emptied["snapshot"], "--yes", "--no-snapshot", env=env, cwd=cwd))
    assert fingerprint_now() == with_scratch
