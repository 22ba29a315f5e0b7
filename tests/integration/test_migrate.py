"""db migrate / status / reset / seed against a real PostgreSQL 15 the tests start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from tests.helpers import ROOT, no_traceback, qbctl

SCHEMA_FILES = sorted(p.name for p in (ROOT / "sql" / "schema").glob("*.sql"))
POLICY_FILES = sorted(p.name for p in (ROOT / "sql" / "policies").glob("*.sql"))
TABLES = {"market_data", "technical_indicators", "orders", "trades", "positions", "strategy_performance", "system_logs"}


def env_for(url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBCTL_", "DATABASE_URL"))}
    return {**env, "DATABASE_URL": url, "NO_COLOR": "1", "COLUMNS": "200", **extra}


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def tracking(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT kind, name FROM qbctl.migrations ORDER BY kind, name").fetchall()


def migrate(url, cwd, *args, **extra):
    return qbctl("db", "migrate", "--json", *args, env=env_for(url, **extra), cwd=cwd)


def test_migrate_from_empty_then_a_rerun_is_a_noop(database, project, pg_server):
    extra = () if pg_server["timescaledb"] else ("--without-timescaledb",)
    first = migrate(database, project, *extra)
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(first.stdout)
    applied = [a["file"] for a in result["applied"]]
    assert applied[: len(SCHEMA_FILES) - (0 if pg_server["timescaledb"] else 1)]
    assert tables(database) == TABLES
    second = migrate(database, project, *extra)
    assert second.returncode == 0
    again = json.loads(second.stdout)
    assert again["applied"] == [] and again["up_to_date"] == len(applied)
    human = qbctl("db", "migrate", *extra, env=env_for(database), cwd=project)
    assert "nothing to apply" in human.stdout


def test_six_concurrent_migrates_apply_each_file_once(database, project, pg_server):
    extra = [] if pg_server["timescaledb"] else ["--without-timescaledb"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "qbctl", "db", "migrate", "--json", *extra],
            env={**env_for(database), "PYTHONPATH": str(ROOT)},
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [o[1] for o in outs]
    applied = [a["file"] for out, _ in outs for a in json.loads(out)["applied"]]
    assert len(applied) == len(set(applied)), applied  # no file applied twice
    expected = len(SCHEMA_FILES) + len(POLICY_FILES) if pg_server["timescaledb"] else len(SCHEMA_FILES) - 1
    assert len(applied) == expected == len(tracking(database))


def test_a_failing_file_is_rolled_back_and_reported_with_file_line_and_sqlstate(database, project):
    (project / "sql" / "schema" / "0006_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\n\n-- the next statement is wrong\nSELECT * FROM no_such_table;\n"
    )
    proc = migrate(database, project, "--without-timescaledb")
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "MIGRATION_FAILED" and err["file"] == "sql/schema/0006_broken.sql"
    assert err["line"] == 4 and err["sqlstate"] == "42P01"
    assert err["message"].startswith('sql/schema/0006_broken.sql:4: 42P01 relation "no_such_table"')
    assert "half_done" not in tables(database)  # the whole file rolled back
    assert ("schema", "0006_broken.sql") not in tracking(database)
    assert "market_data" in tables(database)  # the files before it stay applied
    human = qbctl("db", "migrate", "--without-timescaledb", env=env_for(database), cwd=project)
    assert human.stderr.startswith("error: sql/schema/0006_broken.sql:4: 42P01 relation")  # no "applying" noise
    no_traceback(human)


def test_an_edited_applied_file_is_refused_but_crlf_is_not_an_edit(database, project):
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    path = project / "sql" / "schema" / "0002_market_data.sql"
    original = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + original.replace(b"\n", b"\r\n"))  # BOM + CRLF: not a change
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    path.write_bytes(original.replace(b"bigint        NOT NULL CHECK", b"integer       NOT NULL CHECK"))
    proc = migrate(database, project, "--without-timescaledb")
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "MIGRATION_CHANGED" and err["files"] == ["sql/schema/0002_market_data.sql"]
    assert "new file" in err["hint"] and "--accept-edited" in err["hint"]
    status = qbctl("db", "status", "--json", env=env_for(database), cwd=project)
    assert status.returncode == 1
    states = {m["file"]: m["state"] for m in json.loads(status.stdout)["migrations"]}
    assert states["sql/schema/0002_market_data.sql"] == "changed"
    accepted = migrate(database, project, "--without-timescaledb", "--accept-edited")
    assert accepted.returncode == 0, accepted.stdout
    assert migrate(database, project, "--without-timescaledb").returncode == 0


def test_dry_run_changes_nothing(database, project, pg_server):
    proc = migrate(database, project, "--dry-run", *(() if pg_server["timescaledb"] else ("--without-timescaledb",)))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["dry_run"] and result["applied"] == [] and len(result["would_apply"]) >= len(SCHEMA_FILES) - 1
    assert tables(database) == set()
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regnamespace('qbctl')").fetchone()[0] is None


def test_without_timescaledb_a_clear_error_or_an_explicit_skip(plain_database, project):
    proc = migrate(plain_database, project)
    assert proc.returncode == 3
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "TIMESCALEDB_UNAVAILABLE"
    assert "timescale/timescaledb" in err["hint"] and "--without-timescaledb" in err["hint"]
    ok = migrate(plain_database, project, "--without-timescaledb")
    assert ok.returncode == 0
    result = json.loads(ok.stdout)
    skipped = [s["file"] for s in result["skipped"]]
    assert skipped == ["sql/schema/0001_timescaledb.sql"] + [f"sql/policies/{f}" for f in POLICY_FILES]
    assert tables(plain_database) == TABLES


def test_db_reset_empties_and_migrates_again(database, project, pg_server):
    extra = () if pg_server["timescaledb"] else ("--without-timescaledb",)
    assert migrate(database, project, *extra).returncode == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (strategy, symbol, quantity, avg_price) VALUES ('s', '005930', 1, 1)")
        conn.execute("CREATE TABLE scratch (x int)")
    refused = qbctl("db", "reset", *extra, env=env_for(database), cwd=project)
    assert refused.returncode == 4 and "--yes" in refused.stderr
    proc = qbctl("db", "reset", "--yes", "--json", *extra, env=env_for(database), cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tables(database) == TABLES
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM positions").fetchone()[0] == 0


def test_a_database_that_is_not_there_is_unavailable(project):
    from tests.helpers import free_port

    proc = qbctl(
        "db", "migrate", "--wait", "0.3", env=env_for(f"postgresql://u:pw@127.0.0.1:{free_port()}/db"), cwd=project
    )
    assert proc.returncode == 3 and proc.stderr.startswith("error: cannot reach PostgreSQL at postgresql://u:***@")
    no_traceback(proc)


def test_the_urls_libpq_parameters_reach_the_server(database, project):
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    for args in ((), ("--dry-run",)):  # the no-op answer and the full path alike
        proc = migrate(database + "?sslmode=require", project, "--without-timescaledb", "--wait", "0", *args)
        assert proc.returncode == 3, proc.stdout
        assert "server does not support SSL" in json.loads(proc.stdout)["error"]["message"]
    ok = migrate(database + "?sslmode=disable&application_name=x", project, "--without-timescaledb")
    assert ok.returncode == 0 and json.loads(ok.stdout)["applied"] == []
    bad = qbctl("db", "migrate", env=env_for(database + "?sslmode=bogus"), cwd=project)
    assert bad.returncode == 2 and bad.stderr.startswith("error: DATABASE_URL (postgresql://qb_user:***@")
    assert 'invalid sslmode value: "bogus"' in bad.stderr and "sslmode=require" in bad.stderr
    no_traceback(bad)


def test_without_an_sql_folder_the_schema_shipped_with_qbctl_is_applied(database, tmp_path, pg_server):
    extra = () if pg_server["timescaledb"] else ("--without-timescaledb",)
    proc = qbctl("db", "migrate", "--json", *extra, env=env_for(database), cwd=tmp_path)  # no sql/ here
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tables(database) == TABLES
    shown = qbctl("config", "show", "--json", env=env_for(database), cwd=tmp_path)
    assert json.loads(shown.stdout)["schema"].endswith("(shipped with qbctl)")


def test_seed_loads_what_it_says(database, project, redis_server):
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    env = env_for(database, REDIS_URL=redis_server["url"], MAX_CANDLES_PER_SYMBOL="50")
    proc = qbctl("db", "seed", "--symbols", "3", "--days", "10", "--json", env=env, cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    with psycopg.connect(database) as conn:
        for table, n in result["rows"].items():
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == n > 0, table
        symbols = [r[0] for r in conn.execute("SELECT DISTINCT symbol FROM market_data ORDER BY 1")]
        bad = conn.execute(
            "SELECT count(*) FROM market_data WHERE low > least(open, close) OR high < greatest(open, close)"
        ).fetchone()[0]
    assert symbols == ["000660", "005930", "035420"] and bad == 0
    assert result["market_data_rows_per_second"] > 0
    import redis

    r = redis.Redis(port=redis_server["port"])
    assert r.llen("candles:005930:1m") == 50
    assert r.hget("market:005930", "price") is not None and r.hget("indicators:005930", "sma_20") is not None
    again = qbctl("db", "seed", "--symbols", "3", "--days", "10", "--json", env=env, cwd=project)
    assert again.returncode == 0 and json.loads(again.stdout)["rows"] == result["rows"]  # replaced, not doubled


def test_a_migrate_killed_mid_file_leaves_nothing_the_next_run_cannot_finish(database, project):
    import signal
    import time

    (project / "sql" / "schema" / "0006_slow.sql").write_text("CREATE TABLE slow_done (id int);\nSELECT pg_sleep(2);\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "db", "migrate", "--without-timescaledb"],
        env={**env_for(database), "PYTHONPATH": str(ROOT)},
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(database) as conn:
            if conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' AND pid <> pg_backend_pid()"
            ).fetchone()[0]:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert "slow_done" not in tables(database)  # the killed file's transaction never committed
    again = migrate(database, project, "--without-timescaledb")  # waits for the orphaned session's lock
    assert again.returncode == 0, again.stdout + again.stderr
    assert "slow_done" in tables(database)
    names = [n for _, n in tracking(database)]
    assert names.count("0006_slow.sql") == 1


def test_db_shell_runs_a_local_psql_without_showing_the_password(database, project):
    proc = qbctl("db", "shell", "--local", env=env_for(database), cwd=project, input="SELECT 6 * 7 AS answer;\n")
    assert proc.returncode == 0, proc.stderr
    assert "42" in proc.stdout and "pw" not in " ".join(proc.args)
