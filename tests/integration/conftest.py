"""Real PostgreSQL and Redis servers, started by the tests on free ports in throwaway folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, host_timescaledb, missing, timescaledb_absent

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SECRET_ROLE, SECRET_PASSWORD = "qb_secret", "p@ss:w/rd %?#"


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL 15 server (with TimescaleDB preloaded where it is installed)."""
    yield from _server(host_timescaledb())


@pytest.fixture(scope="session")
def pg_plain_server():
    """A PostgreSQL 15 server without TimescaleDB."""
    yield from _server(False)


@pytest.fixture(scope="session")
def pg_scheduler_server():
    """A PostgreSQL 15 server with TimescaleDB's scheduler on: policies run by themselves, as in production."""
    yield from _server(True, workers=8)


def _server(timescaledb: bool, workers: int = 0):
    if not (PG_BIN / "postgres").exists():
        missing(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    if timescaledb and not host_timescaledb():
        timescaledb_absent("the test needs a server with TimescaleDB preloaded and its scheduler")
    folder = Path(tempfile.mkdtemp(prefix="qbctl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "qb_user", "--auth=trust", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    hba = data / "pg_hba.conf"  # one role with a password, for the tests of password logins
    hba.write_text(f"host all {SECRET_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    port = free_port()
    opts = [
        "-c",
        f"port={port}",
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={folder}",
        "-c",
        "fsync=off",
        "-c",
        "max_connections=60",
        "-c",
        "timescaledb.telemetry_level=off",
    ]
    if timescaledb:
        # workers=0, no background scheduler: tests run each job explicitly (CALL run_job), so nothing
        # runs behind their back and every result is deterministic. With workers, the scheduler runs
        # jobs as it does in production (a launcher, a scheduler per database, a worker per job).
        opts += [
            "-c",
            "shared_preload_libraries=timescaledb",
            "-c",
            f"timescaledb.max_background_workers={workers}",
            "-c",
            f"max_worker_processes={max(8, workers * 2)}",
        ]
    proc = subprocess.Popen(
        _as_postgres([str(PG_BIN / "postgres"), "-D", str(data), *opts]),
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "log", "wb"),
    )
    import psycopg

    url = f"postgresql://qb_user:pw@127.0.0.1:{port}/postgres"
    for _ in range(200):
        try:
            psycopg.connect(url, connect_timeout=1).close()
            break
        except psycopg.OperationalError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("PostgreSQL did not start: " + (folder / "log").read_text()[-2000:])
    yield {"port": port, "url": url, "timescaledb": timescaledb, "workers": workers, "log": folder / "log"}
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


def _database(server, options: str = ""):
    """A new database on `server` for one test (CREATE DATABASE ... options), dropped afterwards."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server["url"], autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" {options}')
    yield f"postgresql://qb_user:pw@127.0.0.1:{server['port']}/{name}"
    with psycopg.connect(server["url"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def secret_database(database, pg_server):
    """`database`, as a URL for a role that logs in with a password (SCRAM) full of URL characters."""
    from urllib.parse import quote

    import psycopg

    with psycopg.connect(pg_server["url"], autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SECRET_ROLE,)).fetchone():
            conn.execute(f"CREATE ROLE {SECRET_ROLE} LOGIN SUPERUSER PASSWORD '{SECRET_PASSWORD}'")
    name = database.rsplit("/", 1)[1]
    return f"postgresql://{SECRET_ROLE}:{quote(SECRET_PASSWORD, safe='')}@127.0.0.1:{pg_server['port']}/{name}"


@pytest.fixture
def database(pg_server):
    """A fresh, empty database on the session's server; its DATABASE_URL."""
    yield from _database(pg_server)


@pytest.fixture
def scheduler_database(pg_scheduler_server):
    """A fresh database on the server whose TimescaleDB scheduler runs jobs."""
    yield from _database(pg_scheduler_server)


@pytest.fixture
def plain_database(pg_plain_server):
    """A fresh database on a server without TimescaleDB."""
    yield from _database(pg_plain_server)


@pytest.fixture
def project(tmp_path):
    """A copy of this repository's sql/ in a folder of its own, to edit freely."""
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    return tmp_path


@pytest.fixture
def needs_timescaledb(request, pg_server):
    """Skipped where TimescaleDB is not installed, in CI too, with what the test needs it for (its
    `timescaledb` marker's reason)."""
    if not pg_server["timescaledb"]:
        marker = request.node.get_closest_marker("timescaledb")
        timescaledb_absent(marker.args[0] if marker and marker.args else "the test needs the extension")


@pytest.fixture(scope="session")
def redis_server():
    binary = shutil.which("redis-server")
    if not binary:
        missing("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    folder = tempfile.mkdtemp(prefix="qbctl-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            folder,
            "--maxmemory",
            "120mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield {"port": port, "url": f"redis://localhost:{port}/0", "proc": proc}
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)
