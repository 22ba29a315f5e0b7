"""The pytest plugin in a throwaway backend repository laid out as the README says (qbctl at tools/qbctl,
installed with pip into a venv of the backend's own, no pytest settings), whose own tests use the
fixtures, against a real stack of the stand-in images (TimescaleDB with its scheduler on, where the
stand-in carries it; elsewhere the TimescaleDB tests skip and the rest runs on the plain schema with
--qb-without-timescaledb): serially and under `-n 4`, two sessions at once, a schema change, a killed
run, a user without CREATEDB, a server that is not running, a server without TimescaleDB, and the
import cost of a run that uses none of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e.conftest import repository_files
from tests.helpers import ROOT, new_project, qbctl, remove_stack, stack_env, standin

pytestmark = pytest.mark.docker

ISOLATION = """\
import json
import os
import pathlib

import psycopg
import pytest
import redis


def _seen(what):
    with pathlib.Path(os.environ["QB_SEEN"]).open("a") as f:
        f.write(json.dumps(what) + "\\n")


@pytest.mark.parametrize("n", range(12))
def test_each_test_is_alone(qb_database_url, qb_redis_url, n):
    with psycopg.connect(qb_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
        assert conn.execute(
            "INSERT INTO orders (symbol, side, order_type, quantity, strategy)"
            " VALUES ('005930', 'buy', 'market', 10, 'test') RETURNING id").fetchone()[0] == 1
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        dbname = conn.info.dbname
    r = redis.Redis.from_url(qb_redis_url)
    assert r.dbsize() == 0
    r.set("market:005930", n)
    _seen({"db": dbname, "redis": qb_redis_url.rsplit("/", 1)[1], "pid": os.getpid(), "tables": tables})


def test_the_session_fixtures(qb_session_database_url, qb_session_redis_url, qb_redis_url):
    with psycopg.connect(qb_session_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM qbctl.migrations").fetchone()[0] >= 4
    assert qb_session_redis_url != qb_redis_url
"""

TIMESCALEDB = """\
import os

import psycopg
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("QB_TSDB") != "1", reason="the stand-in carries no TimescaleDB")


def test_jobs_are_paused_and_none_has_run(qb_database_url):
    with psycopg.connect(qb_database_url) as conn:
        rows = conn.execute("SELECT j.scheduled, coalesce(s.total_runs, 0) FROM timescaledb_information.jobs j"
                            " LEFT JOIN timescaledb_information.job_stats s USING (job_id)"
                            " WHERE j.proc_name LIKE 'policy%'").fetchall()
    assert len(rows) >= 10 and rows == [(False, 0)] * len(rows)


def test_a_refresh_policy_runs_when_the_test_says_so(qb_database_url, qb_run_job):
    with psycopg.connect(qb_database_url, autocommit=True) as conn:
        conn.execute("ALTER MATERIALIZED VIEW market_data_1d SET (timescaledb.materialized_only = true)")
        conn.execute("INSERT INTO market_data (time, symbol, timeframe, open, high, low, close, volume)"
                     " VALUES (now() - interval '2 days', '005930', '1m', 71000, 71100, 70900, 71000, 5)")
        assert conn.execute("SELECT count(*) FROM market_data_1d").fetchone()[0] == 0  # nothing ran
        assert len(qb_run_job("market_data_1d", kind="refresh")) == 1
        assert conn.execute("SELECT count(*) FROM market_data_1d").fetchone()[0] == 1


def test_a_seeded_database_is_compressed_as_production(qb_seeded_database_url):
    with psycopg.connect(qb_seeded_database_url) as conn:
        assert conn.execute("SELECT count(DISTINCT symbol) FROM market_data").fetchone()[0] == 5
        assert conn.execute("SELECT count(*) FROM timescaledb_information.chunks"
                            " WHERE hypertable_name = 'market_data' AND is_compressed").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM market_data_1d").fetchone()[0] > 0
"""

HANG = """\
import os
import pathlib
import time

import pytest
import redis


@pytest.mark.skipif(not os.environ.get("QB_HANG"), reason="only for the killed-run test")
def test_hangs(qb_database_url, qb_redis_url):
    redis.Redis.from_url(qb_redis_url).set("left", "behind")
    db = qb_database_url.rsplit("/", 1)[1].split("?")[0]
    pathlib.Path(os.environ["QB_HANG"]).write_text(db + " " + qb_redis_url.rsplit("/", 1)[1])
    time.sleep(600)
"""

PLAIN = """\
def test_nothing_of_qbctl():
    assert True
"""


FIRST = "tests/test_isolation.py::test_each_test_is_alone[0]"  # one test, for the runs that need no more


def readme_python() -> str:
    """The example of docs/pytest-plugin.md (the README links it), run as written."""
    return (ROOT / "docs" / "pytest-plugin.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def stack(docker_client, standin_timescaledb, tmp_path_factory):
    """postgres and redis of the stand-ins: TimescaleDB with its scheduler on where the image has it."""
    env = stack_env(new_project())
    cwd = tmp_path_factory.mktemp("stack")
    try:  # removed even when up fails: a fixture that fails before its yield gets no teardown
        proc = qbctl("up", "postgres", "redis", "--no-ui", env=env, cwd=cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield {**env, "tsdb": standin_timescaledb}
    finally:
        remove_stack(env, cwd)


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> Path:
    """The backend's checkout: its tests, qbctl at tools/qbctl, and a venv where `pip install
    ./tools/qbctl -r requirements.txt` installed qbctl (and so its plugin) as the README says."""
    repo = tmp_path_factory.mktemp("backend") / "qb-backend"
    for name in repository_files():
        target = repo / "tools" / "qbctl" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (repo / "pyproject.toml").write_text('[project]\nname = "qb-backend"\nversion = "0.1.0"\n\n[tool.qbctl]\n')
    # pytest-xdist for -n; SQLAlchemy for the example of docs/pytest-plugin.md.
    (repo / "requirements.txt").write_text("pytest\npytest-xdist\nsqlalchemy>=2\n")
    tests = repo / "tests"
    tests.mkdir()
    for name, text in (
        ("test_isolation.py", ISOLATION),
        ("test_timescaledb.py", TIMESCALEDB),
        ("test_hang.py", HANG),
        ("test_plain.py", PLAIN),
        ("test_readme_examples.py", readme_python()),
    ):
        (tests / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    venv = repo / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "./tools/qbctl",
            "-r",
            "requirements.txt",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return repo


def backend_env(repo: Path, stack: dict, **extra: str) -> dict[str, str]:
    """A developer's shell in the backend: its venv first, the stack's two URLs, nothing of qbctl's tests."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    env.update(
        {
            "PATH": f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "DATABASE_URL": stack["DATABASE_URL"],
            "REDIS_URL": stack["REDIS_URL"],
            "QB_TSDB": "1" if stack["tsdb"] else "0",
            "QB_SEEN": str(repo / "seen.jsonl"),
            "COLUMNS": "400",
        }
    )  # the short test summary's lines whole
    env.update(extra)
    return env


def plugin_args(stack: dict) -> list[str]:
    if stack["tsdb"]:
        return []
    # No TimescaleDB in the stand-in: the plain schema; the docs' TimescaleDB example left out.
    return [
        "--qb-without-timescaledb",
        "--deselect",
        "tests/test_readme_examples.py::test_old_candles_are_compressed_when_the_policy_runs",
    ]


def pytest_in(repo: Path, env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pytest", "-p", "no:cacheprovider", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
    )


def seen(repo: Path) -> list[dict]:
    path = repo / "seen.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    return rows


def admin(stack: dict):
    return psycopg.connect(stack["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True)


def ours(stack: dict) -> dict[str, tuple[bool, bool]]:
    """The databases the plugin made on the stack's server: name -> (datistemplate, datallowconn)."""
    with admin(stack) as conn:
        return {
            n: (t, a)
            for n, t, a in conn.execute(
                "SELECT datname, datistemplate, datallowconn FROM pg_database WHERE datname LIKE 'qbctl\\_%'"
            )
        }


def redis_at(stack: dict, index: int = 0) -> redis.Redis:
    return redis.Redis.from_url(stack["REDIS_URL"].replace("localhost", "127.0.0.1").rsplit("/", 1)[0] + f"/{index}")


def template_of(output: str) -> tuple[str, str]:
    """(template, how) from the plugin's summary line."""
    m = re.search(r"qbctl: template (qbctl_tpl_[0-9a-f]{16}) (built in|built by another session|found ready)", output)
    assert m, output[-3000:]
    return m.group(1), m.group(2)


def test_the_backends_tests_each_get_their_own_databases_serially_and_under_xdist(stack, backend):
    foreign = redis_at(stack, 15)
    foreign.set("someone:else", "keep")  # a database with keys qbctl did not write: never claimed or flushed
    redis_at(stack, 0).set("backend:own", "keep")  # REDIS_URL's own database: never claimed
    env = backend_env(backend, stack)
    serial = pytest_in(backend, env, *plugin_args(stack))
    assert serial.returncode == 0, serial.stdout[-4000:] + serial.stderr[-2000:]
    template, how = template_of(serial.stdout)
    assert how == "built in" and "Traceback" not in serial.stdout
    first = seen(backend)
    assert len(first) == 12 and len({r["db"] for r in first}) == 12  # a database per test
    assert {"orders", "market_data"} <= set(first[0]["tables"])

    parallel = pytest_in(backend, env, "-n", "4", *plugin_args(stack))
    assert parallel.returncode == 0, parallel.stdout[-4000:] + parallel.stderr[-2000:]
    assert template_of(parallel.stdout) == (template, "found ready")  # the same files: no rebuild
    second = seen(backend)
    assert len({r["pid"] for r in second}) > 1 and len({r["db"] for r in first + second}) == 24
    workers = {}
    for r in second:
        workers.setdefault(r["pid"], set()).add(r["redis"])
    assert all(len(v) == 1 for v in workers.values()) and len(set.union(*workers.values())) == len(workers)
    assert "15" not in set.union(*workers.values()) and "0" not in set.union(*workers.values())

    # Afterwards: the template alone, a real template no one can connect to; no clone, no Redis claim.
    # (The seeded variant's template too, where TimescaleDB runs the seeded test.)
    left = ours(stack)
    assert template in left and set(left.values()) == {(True, False)}, left
    assert all(n.startswith("qbctl_tpl_") for n in left) and len(left) == (2 if stack["tsdb"] else 1)
    with admin(stack) as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'qbctl\\_tpl\\_%'").fetchone()[0]
            == 0
        )
    assert redis_at(stack).keys("qbctl:testdb:*") == [] and redis_at(stack).get("backend:own") == b"keep"
    assert foreign.get("someone:else") == b"keep"
    foreign.flushdb()


def own_sql(repo: Path, extra: str | None) -> None:
    """The backend's own sql/ (qbctl's files and `extra` as 0006), or none (None)."""
    shutil.rmtree(repo / "sql", ignore_errors=True)
    if extra is not None:
        shutil.copytree(ROOT / "sql", repo / "sql")
        (repo / "sql" / "schema" / "0006_backend.sql").write_text(extra)


def test_two_sessions_at_once_build_one_template_and_never_collide(stack, backend):
    own_sql(backend, "CREATE TABLE two_sessions (id int);\n")  # a new checksum: a template to build
    try:
        procs = []
        for k in range(2):
            env = backend_env(backend, stack, QB_SEEN=str(backend / f"seen{k}.jsonl"))
            procs.append(
                subprocess.Popen(
                    ["pytest", "-p", "no:cacheprovider", "-n", "2", "-k", "alone", *plugin_args(stack)],
                    cwd=backend,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outs = [p.communicate(timeout=600)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        hows = [template_of(out) for out in outs]
        assert hows[0][0] == hows[1][0]
        assert sorted(h for _, h in hows).count("built in") == 1, hows  # one build; the other waited or found it
        dbs = [
            json.loads(line)["db"] for k in range(2) for line in (backend / f"seen{k}.jsonl").read_text().splitlines()
        ]
        assert len(dbs) == 24 and len(set(dbs)) == 24
        assert [n for n in ours(stack) if n.startswith(("qbctl_t_", "qbctl_tplb_"))] == []
    finally:
        own_sql(backend, None)


def test_a_schema_change_rebuilds_the_template_and_only_then(stack, backend):
    env = backend_env(backend, stack)
    args = (FIRST, *plugin_args(stack))
    try:
        own_sql(backend, "CREATE TABLE version_one (id int);\n")
        first = pytest_in(backend, env, *args)
        assert first.returncode == 0, first.stdout[-3000:]
        one, how = template_of(first.stdout)
        assert how == "built in" and "version_one" in seen(backend)[0]["tables"]
        again = pytest_in(backend, env, *args)
        assert template_of(again.stdout) == (one, "found ready") and seen(backend)
        own_sql(backend, "CREATE TABLE version_two (id int);\n")
        changed = pytest_in(backend, env, *args)
        assert changed.returncode == 0, changed.stdout[-3000:]
        two, how = template_of(changed.stdout)
        assert two != one and how == "built in"
        tables = seen(backend)[0]["tables"]
        assert "version_two" in tables and "version_one" not in tables
        assert ours(stack)[one] == (True, False)  # the older template is kept (switching back costs nothing)
    finally:
        own_sql(backend, None)


def test_a_killed_runs_databases_are_swept_by_the_next_run(stack, backend, tmp_path):
    marker = tmp_path / "hanging"
    env = backend_env(backend, stack, QB_HANG=str(marker))
    proc = subprocess.Popen(
        ["pytest", "-p", "no:cacheprovider", "-k", "hangs", *plugin_args(stack)],
        cwd=backend,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the hanging test never started"
            time.sleep(0.2)
        db, index = marker.read_text().split()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1)  # the server notices the dead connections
    assert db in ours(stack) and redis_at(stack, int(index)).get("left") == b"behind"
    assert redis_at(stack).get(f"qbctl:testdb:{index}") is not None  # the dead session's record
    nxt = pytest_in(backend, backend_env(backend, stack), FIRST, *plugin_args(stack))
    assert nxt.returncode == 0, nxt.stdout[-3000:]
    assert db not in ours(stack) and [n for n in ours(stack) if n.startswith("qbctl_t_")] == []
    assert redis_at(stack, int(index)).dbsize() == 0 and redis_at(stack).keys("qbctl:testdb:*") == []
    seen(backend)


def test_a_user_without_createdb_gets_one_line_per_test(stack, backend):
    with admin(stack) as conn:
        conn.execute("DROP ROLE IF EXISTS qb_nocreate")
        conn.execute("CREATE ROLE qb_nocreate LOGIN NOCREATEDB PASSWORD 'pw-nocreate'")
    url = re.sub(r"//[^@]*@", "//qb_nocreate:pw-nocreate@", stack["DATABASE_URL"])
    proc = pytest_in(backend, backend_env(backend, stack, DATABASE_URL=url), "-k", "alone")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    line = (
        f"qbctl: the user qb_nocreate of DATABASE_URL ({url.replace('pw-nocreate', '***')}) may not create "
        "databases (no CREATEDB) (the test databases are clones of a template: a superuser can grant it with "
        "ALTER ROLE qb_nocreate CREATEDB, or point DATABASE_URL at a user that has it)"
    )
    assert proc.stdout.count(f" - Failed: {line}\n") == 12, proc.stdout[-3000:]  # the short summary: each test
    first = proc.stdout.split("ERROR at setup of", 1)[1].split("\n_", 1)[0]
    assert [x for x in first.splitlines()[1:] if x.strip()] == [line], first  # the report: that line alone
    assert "pw-nocreate" not in proc.stdout


def test_the_stack_is_started_only_when_asked(docker_client, backend, tmp_path):
    """A project whose stack is not running: one line per test, nothing started; with --qb-up, started."""
    env = stack_env(new_project())
    run_env = {
        **backend_env(backend, {**env, "tsdb": False}),
        **{k: v for k, v in env.items() if k.startswith("QBCTL_")},
    }
    try:
        down = pytest_in(backend, run_env, FIRST)
        assert down.returncode == 1 and "Traceback" not in down.stdout
        assert re.search(
            r"ERROR tests/test_isolation.py::test_each_test_is_alone\[0\] - Failed: qbctl: cannot reach "
            r"PostgreSQL at postgresql://qb_user:\*\*\*@localhost:\d+/qb_trading_dev: connection "
            r"refused \(`qbctl up` starts it",
            down.stdout,
        ), down.stdout[-3000:]
        assert (
            docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}) == []
        )
        up = pytest_in(backend, run_env, FIRST, "--qb-up", *plugin_args({"tsdb": False}))
        assert up.returncode == 0, up.stdout[-3000:]
        assert {
            c.labels["io.qbctl.service"]
            for c in docker_client.containers.list(filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"})
        } == {"postgres", "redis"}
    finally:
        seen(backend)
        remove_stack(env, tmp_path)


def test_a_server_without_timescaledb_is_one_line_and_the_plain_schema_runs(docker_client, backend, tmp_path):
    env = stack_env(new_project(), QBCTL_POSTGRES_IMAGE=standin("postgres17"))  # no TimescaleDB in it
    try:
        proc = qbctl("up", "postgres", "redis", "--no-ui", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run_env = backend_env(backend, {**env, "tsdb": False})
        missing = pytest_in(backend, run_env, FIRST)
        assert missing.returncode == 1 and "Traceback" not in missing.stdout
        assert re.search(
            r" - Failed: qbctl: the server of DATABASE_URL \(postgresql://qb_user:\*\*\*@localhost:\d+/"
            r"qb_trading_dev\) does not have the timescaledb extension; the test template needs it for "
            r"sql/ \(.*--qb-without-timescaledb",
            missing.stdout,
        ), missing.stdout[-3000:]
        plain = pytest_in(backend, run_env, "-k", "alone", *plugin_args({"tsdb": False}))
        assert plain.returncode == 0 and "12 passed" in plain.stdout, plain.stdout[-3000:]
    finally:
        seen(backend)
        remove_stack(env, tmp_path)


PROBE = """\
import json, sys, time
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_plain.py"])
loaded = sys.modules.get("qbctl.pytest_plugin") is not None
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "redis", "docker", "sqlalchemy", "typer", "rich")
              or m.startswith(("qbctl.", "qbctl")) and m not in ("qbctl", "qbctl.pytest_plugin"))
print(json.dumps({"code": int(code), "loaded": loaded, "heavy": mods}))
"""

IMPORT = """\
import time
import pytest
started = time.perf_counter()
import qbctl.pytest_plugin
print((time.perf_counter() - started) * 1000)
"""


def test_a_run_that_uses_no_fixture_imports_nothing_of_it(backend):
    """`pytest` with the plugin installed and no test asking for it: the plugin is loaded (it is
    registered), and not one module it would need (qbctl's settings and database code, psycopg, redis,
    docker); importing it, once pytest is there, takes a few milliseconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))}
    env["PATH"] = f"{backend / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"
    proc = subprocess.run(["python", "-c", PROBE], cwd=backend, env=env, capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": True, "heavy": []}, proc.stdout + proc.stderr
    times = sorted(
        float(
            subprocess.run(
                ["python", "-c", IMPORT], cwd=backend, env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    )
    assert times[2] < 20, times  # milliseconds: the module and qbctl's __init__, nothing else
