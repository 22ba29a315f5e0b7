"""db migrate --rehearse on a real engine: a seeded stack whose old chunks are compressed (TimescaleDB with
its scheduler on, where the stand-in carries it; the plain schema elsewhere). Each rehearsal is checked
against the real database read independently of qbctl: its columns, rows, chunks' compression, tracking
table and the server's list of databases must be exactly as before."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.helpers import ROOT, new_project, no_traceback, qbctl, stack_env

pytestmark = pytest.mark.docker

COPY_LIKE = "%\\_qbctl\\_rehearse\\_%"


def pg(env, db=None):
    url = env["DATABASE_URL"].replace("localhost", "127.0.0.1")
    if db:
        url = url.rsplit("/", 1)[0] + "/" + db
    return psycopg.connect(url, autocommit=True)


def compress_old_chunks(env, days: int = 7) -> int:
    """Seed's data as the VM has it (until `db seed` does it itself): every market_data chunk older than
    COMPRESSION_AFTER_DAYS compressed, the policies' jobs held meanwhile (db/jobs.py), so that their
    scheduler does not run them at the same time. Returns the compressed chunks."""
    from qbctl.db import jobs
    from qbctl.db.connect import psycopg_rows

    with pg(env) as conn:
        rows = psycopg_rows(conn)
        held = jobs.hold(rows, "j.proc_name = 'policy_compression'")
        try:
            conn.execute(
                "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM"
                f" show_chunks('market_data', older_than => interval '{days} days') c"
            )
        finally:
            jobs.release(rows, held)
        return conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name ="
            " 'market_data' AND is_compressed"
        ).fetchone()[0]


def state(env) -> dict:
    """Everything a rehearsal must leave as it was, read without qbctl."""
    with pg(env) as conn:
        out = {
            "columns": conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' ORDER BY 1, 2"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall(),
            "migrations": conn.execute(
                "SELECT kind, name, checksum, applied_at FROM qbctl.migrations ORDER BY 1, 2"
            ).fetchall(),
            "rows": {
                t: conn.execute(
                    f"SELECT count(*), md5(string_agg(r::text, '|' ORDER BY r::text)) FROM {t} r"
                ).fetchone()
                for t in ("market_data", "orders", "trades")
            },
            "databases": conn.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall(),
        }
        if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]:
            out["chunks"] = conn.execute(
                "SELECT chunk_name, is_compressed FROM timescaledb_information.chunks ORDER BY 1"
            ).fetchall()
            out["jobs"] = conn.execute(
                "SELECT job_id, scheduled, config::text FROM timescaledb_information.jobs ORDER BY 1"
            ).fetchall()
    return out


def copies(env) -> list[str]:
    """Copies of either kind left: a database of the stack's server (--logical), a scratch container."""
    with pg(env, "postgres") as conn:
        found = [d for (d,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (COPY_LIKE,))]
    return found + [c.name for c in scratch_containers(env)]


def scratch_containers(env) -> list:
    import docker

    client = docker.from_env()
    try:
        for _ in range(5):
            try:
                return client.containers.list(
                    all=True,
                    filters={"label": [f"io.qbctl.project={env['QBCTL_PROJECT']}", "io.qbctl.helper=rehearse"]},
                )
            except docker.errors.NotFound:  # removed between the listing and its inspection: list again
                continue
        return []
    finally:
        client.close()


def in_copy(env, sql: str) -> str:
    """A query's answer from the copy, whichever kind runs ('' while there is none)."""
    import docker

    for c in scratch_containers(env):
        try:
            r = c.exec_run(["psql", "-U", "qb_user", "-d", "postgres", "-Atc", sql])
        except docker.errors.APIError:  # created, not started yet (the copy is being put in)
            return ""
        return r.output.decode().strip() if r.exit_code == 0 else ""
    with pg(env, "postgres") as conn:
        return str(
            conn.execute(
                sql.replace(
                    "FROM pg_stat_activity WHERE", f"FROM pg_stat_activity WHERE datname LIKE '{COPY_LIKE}' AND"
                )
            ).fetchone()[0]
        )


@pytest.fixture(scope="module")
def stack(docker_client, tmp_path_factory, standin_timescaledb, schema_flags):
    """One stack, migrated, seeded (12 days) and, with TimescaleDB, its chunks older than 7 days compressed;
    the project has its own sql/ (a copy of qbctl's), so each test can add a file."""
    env = stack_env(new_project())
    cwd = tmp_path_factory.mktemp("rehearse")
    shutil.copytree(ROOT / "sql", cwd / "sql")
    for step in (
        ("up", "postgres"),
        ("db", "migrate", *schema_flags),
        ("db", "seed", "--symbols", "3", "--days", "12", "--no-redis"),
    ):
        proc = qbctl(*step, env=env, cwd=cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    if standin_timescaledb:
        assert compress_old_chunks(env) >= 3
    yield env, cwd
    qbctl("reset", "--yes", "--no-snapshot", env=env, cwd=cwd)


@pytest.fixture
def migration(stack):
    """Write sql/schema/0090_rehearsed.sql for one test; removed after it."""
    env, cwd = stack
    path = cwd / "sql" / "schema" / "0090_rehearsed.sql"
    yield path.write_text
    path.unlink(missing_ok=True)


def rehearse(env, cwd, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = qbctl("db", "migrate", "--rehearse", "--json", *extra, env=env, cwd=cwd)
    no_traceback(proc)
    return proc, json.loads(proc.stdout)


def test_a_failing_file_exits_1_with_its_line_and_the_database_untouched(stack, migration, schema_flags):
    env, cwd = stack
    migration(
        "-- needs a default: the tables hold rows\nALTER TABLE orders ADD COLUMN audited_by text;\n"
        "ALTER TABLE orders ADD COLUMN reviewer int NOT NULL;\n"
    )
    before = state(env)
    proc, out = rehearse(env, cwd, *schema_flags)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert out["ok"] is False and out["error"]["code"] == "REHEARSAL_FAILED"
    assert out["error"]["message"].startswith("sql/schema/0090_rehearsed.sql:3: 23502"), out["error"]
    assert "was not touched" in out["error"]["message"]
    (f,) = out["files"]
    assert f["ok"] is False and [s["ok"] for s in f["statements"]] == [True, False]
    assert out["dropped"] is True and out["copy"]["method"].startswith("pg_basebackup")
    assert state(env) == before
    assert copies(env) == []
    human = qbctl("db", "migrate", "--rehearse", *schema_flags, env=env, cwd=cwd)
    assert human.returncode == 1
    assert "FAILED  sql/schema/0090_rehearsed.sql" in human.stdout
    assert "pg_basebackup into a scratch container" in human.stdout and "the copy was removed" in human.stdout
    assert "error: sql/schema/0090_rehearsed.sql:3: 23502" in human.stderr and "Traceback" not in human.stderr


@pytest.mark.parametrize("how", ["physical", "logical"])
def test_a_passing_file_reports_locks_rows_and_decompression_and_changes_nothing(
    stack, migration, schema_flags, standin_timescaledb, how
):
    env, cwd = stack
    if how == "logical":
        schema_flags = (*schema_flags, "--logical")
    migration(
        "ALTER TABLE market_data ADD COLUMN note text;\n"
        "UPDATE market_data SET note = 'old' WHERE time < now() - interval '9 days';\n"
        "CREATE INDEX orders_created_idx ON orders (created_at);\n"
    )
    before = state(env)
    proc, out = rehearse(env, cwd, *schema_flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["ok"] is True and out["copy"]["seconds"] > 0 and out["apply_seconds"] > 0
    assert out["copy"]["method"].startswith("pg_basebackup" if how == "physical" else "pg_dump | pg_restore")
    (f,) = out["files"]
    assert f["file"] == "sql/schema/0090_rehearsed.sql" and f["ok"]
    assert [s["line"] for s in f["statements"]] == [1, 2, 3]
    locks = {lk["table"]: lk for lk in f["locks"]}
    md = locks["market_data"]
    assert md["mode"] == "AccessExclusiveLock" and md["line"] == 1 and md["blocks_writes"]
    # held from the ALTER's start until the commit: through the UPDATE and the index
    assert md["seconds"] * 1000 >= f["statements"][1]["ms"]
    assert md["says"].startswith("an AccessExclusiveLock on market_data for ")
    assert "blocks the collector's inserts and every read of it for" in md["says"]
    assert locks["orders"]["mode"] == "ShareLock" and "reads go on" in locks["orders"]["says"]
    updated = f["statements"][1]["rows"]["market_data"]["updated"]
    with pg(env) as conn:
        old = conn.execute("SELECT count(*) FROM market_data WHERE time < now() - interval '9 days'").fetchone()[0]
    assert updated == old > 0
    if standin_timescaledb:
        assert f["batches_decompressed"]["market_data"] > 0
        assert f["partly_decompressed"]["market_data"] >= 1
    assert state(env) == before
    assert copies(env) == []


def test_a_statement_outside_a_transaction_has_its_locks_sampled_and_its_rewrites_read(stack, migration, schema_flags):
    env, cwd = stack
    migration("-- qbctl: no-transaction\nVACUUM FULL market_data;\n")
    if schema_flags:  # the plain table of a 3 x 12 seed is rewritten in under 20 ms, between two samples
        with pg(env) as conn:
            conn.execute(
                "INSERT INTO market_data SELECT now() - g * interval '1 minute', '999999', '1m', 1, 1, 1, 1, 1"
                " FROM generate_series(1, 300000) g ON CONFLICT DO NOTHING"
            )
    before = state(env)
    proc, out = rehearse(env, cwd, *schema_flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (f,) = out["files"]
    (st,) = f["statements"]
    assert "sampled every 20 ms" in st["note"]
    assert st["locks"]["market_data"] == "AccessExclusiveLock", st
    assert f["locks"][0]["table"] == "market_data" and f["locks"][0]["seconds"] > 0
    assert f["rewritten"]["market_data"] >= 1  # the table (or its chunks) written anew: a new relfilenode
    assert state(env) == before and copies(env) == []


@pytest.mark.timescaledb("the failure needs compressed chunks")
def test_a_type_change_on_compressed_chunks_fails_on_the_copy(stack, migration, needs_standin_timescaledb):
    env, cwd = stack
    migration("ALTER TABLE market_data ALTER COLUMN volume TYPE numeric;\n")
    before = state(env)
    proc, out = rehearse(env, cwd)
    assert proc.returncode == 1
    assert "operation not supported on hypertables with compressed chunks" in out["error"]["message"]
    assert out["error"]["message"].startswith("sql/schema/0090_rehearsed.sql:1: 0A000")
    assert state(env) == before and copies(env) == []


def _interrupt_when(env, cwd, seen, *extra: str) -> subprocess.CompletedProcess:
    """Start a rehearsal, send it SIGINT (Ctrl-C) once `seen()` is true, and return how it ended."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "db", "migrate", "--rehearse", *extra],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not seen():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the moment to interrupt never came"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("how", ["physical", "logical"])
def test_ctrl_c_while_the_copy_is_made_leaves_no_copy(stack, migration, schema_flags, how):
    env, cwd = stack
    migration("ALTER TABLE orders ADD COLUMN audited_by text;\n")
    before = state(env)
    ended = _interrupt_when(
        env, cwd, lambda: bool(copies(env)), *schema_flags, *(("--logical",) if how == "logical" else ())
    )
    assert ended.returncode == 130, ended.stdout + ended.stderr
    assert "interrupted: the copy was dropped; the database was not touched" in ended.stderr
    no_traceback(ended)
    assert copies(env) == []
    with pg(env) as conn:  # no pg_dump of the copy still reads the real database
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'qbctl-rehearse-%'"
            ).fetchone()[0]
            == 0
        )
    assert state(env) == before


@pytest.mark.parametrize("how", ["physical", "logical"])
def test_ctrl_c_while_a_statement_runs_on_the_copy_leaves_no_copy(stack, migration, schema_flags, how):
    env, cwd = stack
    migration("ALTER TABLE orders ADD COLUMN audited_by text;\nSELECT pg_sleep(60);\n")
    before = state(env)

    def sleeping() -> bool:
        found = in_copy(env, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
        return found not in ("", "0")

    started = time.monotonic()
    ended = _interrupt_when(env, cwd, sleeping, *schema_flags, *(("--logical",) if how == "logical" else ()))
    assert ended.returncode == 130, ended.stdout + ended.stderr
    assert time.monotonic() - started < 40  # the sleep was cancelled, not waited for
    no_traceback(ended)
    assert copies(env) == []
    assert state(env) == before


@pytest.mark.parametrize("how", ["physical", "logical"])
def test_a_copy_left_by_a_killed_rehearsal_is_dropped_by_the_next(stack, migration, schema_flags, how):
    env, cwd = stack
    migration("SELECT pg_sleep(60);\n")
    flags = ("--logical",) if how == "logical" else ()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "db", "migrate", "--rehearse", *schema_flags, *flags],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not copies(env):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no finally runs
        proc.wait()
    (left,) = copies(env)
    migration("ALTER TABLE orders ADD COLUMN audited_by text;\n")
    done, out = rehearse(env, cwd, *schema_flags, *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    if how == "logical":
        assert out["swept"] == [left]  # the database: found by its mark, its lock free
    # (the scratch container has one name per project: the next rehearsal's replaces it)
    assert copies(env) == []


def test_nothing_pending_makes_no_copy(stack, schema_flags):
    env, cwd = stack
    proc, out = rehearse(env, cwd, *schema_flags)
    assert proc.returncode == 0 and out["files"] == [] and out["copy"] == {}
    human = qbctl("db", "migrate", "--rehearse", *schema_flags, env=env, cwd=cwd)
    assert "nothing to rehearse, every file is applied" in human.stdout


def test_what_cannot_be_copied_off_a_remote_engine_or_another_server_is_refused_in_one_line(tmp_path):
    # A remote engine's copy is made on this machine's (tests/e2e/test_rehearse_remote.py); refused before
    # ssh is even tried: --logical (a database beside the live one), the VM named as the copy's engine, and
    # an engine of one's own that does not answer.
    env = stack_env(new_project(), DOCKER_HOST="ssh://qb@vm.invalid")
    for extra, settings, says in (
        (
            ("--logical",),
            {},
            "error: --logical builds its copy as a database of the live server, and that server is on vm.invalid",
        ),
        (
            (),
            {"QBCTL_REHEARSE_DOCKER_HOST": "ssh://other@vm.invalid:22"},
            "error: QBCTL_REHEARSE_DOCKER_HOST=ssh://other@vm.invalid:22 is the engine of the live database on "
            "vm.invalid: a rehearsal's copy is never built there",
        ),
        (
            (),
            {"QBCTL_REHEARSE_DOCKER_HOST": f"unix://{tmp_path}/none.sock"},
            f"error: the rehearsal's copy runs on your own engine, unix://{tmp_path}/none.sock "
            "(QBCTL_REHEARSE_DOCKER_HOST), which does not answer",
        ),
    ):
        proc = qbctl("db", "migrate", "--rehearse", *extra, env={**env, **settings}, cwd=tmp_path)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert says in " ".join(proc.stderr.split()), proc.stderr
        no_traceback(proc)
    env = stack_env(new_project(), DATABASE_URL="postgresql://qb:pw@db.example.invalid:5432/qb")
    proc = qbctl("db", "migrate", "--rehearse", "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 3 and json.loads(proc.stdout)["error"]["code"] == "REHEARSAL_UNAVAILABLE"
    assert "pw" not in proc.stdout + proc.stderr
