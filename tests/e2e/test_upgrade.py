"""qbctl upgrade on a real engine: PostgreSQL 15 -> 17 with real data (the PostgreSQL 17 stand-in is built from
Debian 13; it has no TimescaleDB, so the data is the plain schema), and the TimescaleDB path on 15."""

from __future__ import annotations

import json
import shutil

import psycopg
import pytest

from tests.e2e.test_snapshots import fingerprint, ok
from tests.helpers import ROOT, missing, no_traceback, qbctl, standin

pytestmark = pytest.mark.docker
PG17 = standin("postgres17")


@pytest.fixture
def pg17(docker_client):
    try:
        docker_client.images.get(PG17)
    except Exception:  # noqa: BLE001
        missing(f"stand-in image {PG17} is missing; run tests/images/build.sh")


def server_version(env) -> int:
    with psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def test_a_major_upgrade_moves_the_data_and_keeps_the_old_volume(project_env, tmp_path, docker_client, pg17):
    env = project_env
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    ok(qbctl("up", "--no-ui", env=env, cwd=tmp_path))
    # The PostgreSQL 17 stand-in has no TimescaleDB: the data must not use it, so the extension the image
    # created at its first start (in postgres, template1 and the stack's database) goes first.
    for db in ("postgres", "template1", "qb_trading_dev"):
        with psycopg.connect(
            env["DATABASE_URL"].replace("localhost", "127.0.0.1").rsplit("/", 1)[0] + f"/{db}", autocommit=True
        ) as conn:
            conn.execute("DROP EXTENSION IF EXISTS timescaledb CASCADE")
    ok(qbctl("db", "migrate", "--without-timescaledb", env=env, cwd=tmp_path))
    ok(qbctl("db", "seed", "--symbols", "3", "--days", "5", env=env, cwd=tmp_path))
    with psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True) as conn:
        conn.execute("CREATE ROLE reporting LOGIN PASSWORD 'r'")  # a role of its own, and another database
        conn.execute("GRANT SELECT ON market_data TO reporting")
        conn.execute("CREATE DATABASE scratch")
    with psycopg.connect(
        env["DATABASE_URL"].replace("localhost", "127.0.0.1").rsplit("/", 1)[0] + "/scratch", autocommit=True
    ) as conn:
        conn.execute("CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 500) g")
    before = fingerprint(env)
    project = env["QBCTL_PROJECT"]
    old_volume = f"{project}_pgdata"
    labels = docker_client.volumes.get(old_volume).attrs["Labels"]
    assert labels["io.qbctl.pg-major"] == "15" and labels["io.qbctl.pg-image"] == standin("postgres")
    assert labels["io.qbctl.pg-image-id"].startswith("sha256:")

    new = {**env, "QBCTL_POSTGRES_IMAGE": PG17}
    refused = qbctl("up", "--no-ui", "--json", env=new, cwd=tmp_path)
    assert refused.returncode == 1
    err = json.loads(refused.stdout)["error"]
    assert err["code"] == "VOLUME_INCOMPATIBLE" and "`qbctl upgrade`" in err["hint"]
    asked = qbctl("upgrade", env=new, cwd=tmp_path, input="")
    assert asked.returncode == 4 and "needs confirmation" in asked.stderr
    assert server_version(env) == 15  # nothing happened

    proc = ok(qbctl("upgrade", "--yes", "--json", env=new, cwd=tmp_path, timeout=600))
    result = json.loads(proc.stdout)
    assert result["kind"] == "major" and result["from_major"] == "15" and result["to_major"] == "17"
    assert result["target"] == f"{project}_pgdata_pg17" and result["kept_volume"] == old_volume
    assert result["remove_command"] == f"docker volume rm {old_volume}"
    moved = {d["database"]: d["rows"] for d in result["databases"]}
    assert moved["scratch"] == 500 and moved["qb_trading_dev"] > 10_000
    assert server_version(env) == 17
    assert fingerprint(env) == before
    port = env["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    with psycopg.connect(f"postgresql://reporting:r@127.0.0.1:{port}/qb_trading_dev", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM market_data").fetchone()[0] == before["public.market_data"][0]
    assert docker_client.volumes.get(f"{project}_pgdata_pg17").attrs["Labels"]["io.qbctl.pg-major"] == "17"
    assert docker_client.volumes.get(old_volume).attrs["Labels"]["io.qbctl.pg-major"] == "15"  # kept
    again = ok(qbctl("up", "--no-ui", "--json", env=new, cwd=tmp_path))
    assert {s["action"] for s in json.loads(again.stdout)["services"]} == {"keep"}
    nothing = ok(qbctl("upgrade", "--json", env=new, cwd=tmp_path, input=""))
    assert "nothing to upgrade" in json.loads(nothing.stdout)["reason"]

    # A snapshot of PostgreSQL 17 data is refused by a PostgreSQL 15 image; pinning 15 finds the old data.
    ok(qbctl("snapshot", "on17", env=new, cwd=tmp_path))
    ok(qbctl("up", "--no-ui", env=env, cwd=tmp_path))
    assert server_version(env) == 15 and fingerprint(env) == before
    newer = qbctl("restore", "on17", "--yes", "--json", env=env, cwd=tmp_path)
    no_traceback(newer)
    assert newer.returncode == 1
    err = json.loads(newer.stdout)["error"]
    assert (
        err["code"] == "SNAPSHOT_INCOMPATIBLE" and "is of PostgreSQL 17, the image runs PostgreSQL 15" in err["message"]
    )
    assert fingerprint(env) == before


def test_upgrade_with_the_image_the_data_was_made_with_has_nothing_to_do(project_env, tmp_path):
    env = project_env
    fresh = ok(qbctl("upgrade", "--json", env=env, cwd=tmp_path, input=""))
    assert json.loads(fresh.stdout)["kind"] == "none"
    ok(qbctl("up", "postgres", env=env, cwd=tmp_path))
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    migrated = qbctl("db", "migrate", "--json", env=env, cwd=tmp_path)
    tsdb = migrated.returncode == 0 and json.loads(migrated.stdout)["timescaledb"]
    proc = ok(qbctl("upgrade", "--json", env=env, cwd=tmp_path, input=""))
    result = json.loads(proc.stdout)
    assert result["kind"] == "timescaledb" and "nothing to upgrade" in result["reason"]
    if tsdb:  # the one TimescaleDB version here is the image's: up to date in every database the image made it in
        assert {t["database"]: t["from"] == t["to"] for t in result["timescaledb"]} == {
            "postgres": True,
            "qb_trading_dev": True,
            "template1": True,
        }


def _offered(env) -> tuple[str, list[str]]:
    """The image's TimescaleDB version, and the older ones it can still install."""
    with psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True) as conn:
        default = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()[0]
        versions = [
            v for (v,) in conn.execute("SELECT version FROM pg_available_extension_versions WHERE name = 'timescaledb'")
        ]

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("-")[0].split(".") if p.isdigit())

    return default, sorted((v for v in versions if key(v) < key(default)), key=key)


@pytest.mark.timescaledb("the test updates the extension in place")
def test_a_timescaledb_update_snapshots_first_and_updates_in_place(project_env, tmp_path, needs_standin_timescaledb):
    env = project_env
    ok(qbctl("up", "--no-ui", env=env, cwd=tmp_path))
    default, older = _offered(env)
    if not older:
        pytest.skip(
            f"the postgres stand-in carries only TimescaleDB {default}: an update needs an older "
            "release's files (its timescaledb-X.so, timescaledb-tsl-X.so, timescaledb--X.sql) installed "
            "beside it on the host, as the timescale/timescaledb images ship several"
        )
    old = older[-1]
    # Data made by an image whose TimescaleDB was `old`: the extension that image created at its first start
    # is at that version.
    with psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True) as conn:
        conn.execute("DROP EXTENSION timescaledb")
        conn.execute(f"CREATE EXTENSION timescaledb VERSION '{old}'")
    # Started again on that data, `up` says so: the version read from the database, not the image's word.
    ok(qbctl("down", env=env, cwd=tmp_path))
    again = ok(qbctl("up", "--no-ui", env=env, cwd=tmp_path))
    assert f"database qb_trading_dev uses TimescaleDB {old}, the image ships {default}: `qbctl upgrade`" in " ".join(
        again.stderr.split()
    )
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    ok(qbctl("db", "migrate", env=env, cwd=tmp_path))
    ok(qbctl("db", "seed", "--symbols", "2", "--days", "3", env=env, cwd=tmp_path))
    # (db status exits 1 while a job's last run failed: the versions are what this test reads)
    status = json.loads(qbctl("db", "status", "--json", env=env, cwd=tmp_path).stdout)
    assert (status["timescaledb"], status["timescaledb_available"]) == (old, default)
    said = qbctl("db", "status", env=env, cwd=tmp_path).stdout
    assert f"the image offers TimescaleDB {default}: `qbctl upgrade` updates {old} to it" in " ".join(said.split())
    before = fingerprint(env)

    proc = ok(qbctl("upgrade", "--json", env=env, cwd=tmp_path, input="", timeout=600))
    result = json.loads(proc.stdout)
    assert result["kind"] == "timescaledb"
    assert [t for t in result["timescaledb"] if t["from"] != t["to"]] == [
        {"database": "qb_trading_dev", "from": old, "to": default}
    ]
    assert {t["database"] for t in result["timescaledb"]} == {"postgres", "qb_trading_dev", "template1"}
    assert result["snapshot"].startswith("auto-upgrade-")
    assert result["verify"]["ok"] is True, result["verify"]
    with psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True) as conn:
        assert (
            conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0] == default
        )
    assert fingerprint(env) == before  # rows, hypertables, chunks and jobs as they were
    listed = json.loads(ok(qbctl("snapshot", "list", "--json", env=env, cwd=tmp_path)).stdout)
    taken = {s["name"]: s for s in listed["snapshots"]}[result["snapshot"]]
    assert taken["timescaledb"] == old
    again = json.loads(ok(qbctl("upgrade", "--json", env=env, cwd=tmp_path, input="")).stdout)
    assert "nothing to upgrade" in again["reason"] and again["snapshot"] is None

    # The snapshot brings the data back: loaded at its version, then updated to the image's again.
    back = json.loads(
        ok(
            qbctl("restore", result["snapshot"], "--yes", "--no-snapshot", "--json", env=env, cwd=tmp_path, timeout=600)
        ).stdout
    )
    assert back["postgres"]["rows"] > 0
    assert fingerprint(env) == before
