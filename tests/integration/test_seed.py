"""db seed never deletes rows it did not write; it says what it replaces; a killed backend is named as such."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg

from tests.helpers import ROOT, qbctl
from tests.integration.test_migrate import env_for, migrate


def seed(database, cwd, *args, **extra):
    return qbctl("db", "seed", "--no-redis", "--json", *args, env=env_for(database, **extra), cwd=cwd)


def counts(database) -> dict[str, int]:
    with psycopg.connect(database) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("market_data", "technical_indicators", "orders", "trades", "system_logs")
        }


def per_symbol(database, table="market_data") -> dict[str, int]:
    with psycopg.connect(database) as conn:
        return dict(conn.execute(f"SELECT symbol, count(*) FROM {table} GROUP BY 1").fetchall())


def test_a_smaller_seed_replaces_only_its_own_symbols_and_says_so(database, project):
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    first = seed(database, project, "--symbols", "3", "--days", "10")
    assert first.returncode == 0, first.stderr
    before = per_symbol(database)
    with psycopg.connect(database) as conn:
        orders_before = dict(conn.execute("SELECT symbol, count(*) FROM orders GROUP BY 1").fetchall())
    small = seed(database, project, "--symbols", "1", "--days", "3")
    assert small.returncode == 0, small.stderr
    result = json.loads(small.stdout)
    assert result["replaced"]["market_data"] == before["005930"]  # exactly its own earlier seed of 005930
    assert result["replaced"]["orders"] == orders_before["005930"]
    after = per_symbol(database)
    assert after["000660"] == before["000660"] and after["035420"] == before["035420"]  # untouched
    with psycopg.connect(database) as conn:
        orders_after = dict(conn.execute("SELECT symbol, count(*) FROM orders GROUP BY 1").fetchall())
    assert orders_after["000660"] == orders_before["000660"]  # the other symbols' orders stay
    human = qbctl("db", "seed", "--no-redis", "--symbols", "1", "--days", "3", env=env_for(database), cwd=project)
    assert human.returncode == 0 and "replaced the earlier seed of these symbols: market_data" in human.stdout


def test_rows_seed_did_not_write_are_never_deleted(database, project):
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    with psycopg.connect(database) as conn:  # the backend's own data: a live candle, a daily candle, an order
        conn.execute(
            "INSERT INTO market_data VALUES (now() - interval '1 day', '005930', '1m', 1, 1, 1, 1, 1),"
            " (now() - interval '1 day', '000660', '1d', 1, 1, 1, 1, 1)"
        )
        conn.execute(
            "INSERT INTO orders (symbol, side, order_type, quantity, strategy) VALUES"
            " ('005930', 'buy', 'market', 1, 'momentum-live')"
        )
        conn.execute("INSERT INTO system_logs VALUES (now(), 'INFO', 'qb.backend', 'started', null)")
    refused = seed(database, project, "--symbols", "2", "--days", "5")
    assert refused.returncode == 1
    err = json.loads(refused.stdout)["error"]
    assert err["code"] == "SEED_CONFLICT" and err["symbols"] == {"005930": {"market_data": 1}}
    assert "nothing was changed" in err["message"] and "--yes" in err["hint"]
    assert counts(database)["market_data"] == 2 and counts(database)["orders"] == 1  # nothing was changed
    human = qbctl("db", "seed", "--no-redis", "--symbols", "2", "--days", "5", env=env_for(database), cwd=project)
    assert human.returncode == 1 and human.stderr.startswith("error: 005930 holds 1-minute rows that db seed")
    forced = seed(database, project, "--symbols", "2", "--days", "5", "--yes")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["kept"] == {"005930": 1}
    for _ in range(2):  # seeding again, with --yes, replaces its own rows and only those
        again = seed(database, project, "--symbols", "2", "--days", "5", "--yes")
        assert again.returncode == 0, again.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM market_data WHERE open = 1").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM orders WHERE strategy = 'momentum-live'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM system_logs WHERE logger = 'qb.backend'").fetchone()[0] == 1
    assert counts(database)["market_data"] == json.loads(again.stdout)["rows"]["market_data"] + 2


def _backend_pid(database, like: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(database) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'qbctl' AND query ILIKE %s"
                " AND pid <> pg_backend_pid()",
                (like,),
            ).fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError(f"no qbctl backend running {like}")


def _wait_for_server(database, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            psycopg.connect(database, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.1)


def test_a_backend_killed_during_migrate_or_seed_is_server_killed(database, project):
    if os.geteuid() != 0:
        import pytest

        pytest.skip("killing a PostgreSQL backend needs root (the server runs as postgres)")
    (project / "sql" / "schema" / "0006_slow.sql").write_text("SELECT pg_sleep(30);\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "db", "migrate", "--without-timescaledb", "--json"],
        env={**env_for(database), "PYTHONPATH": str(ROOT)},
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.kill(_backend_pid(database, "%pg_sleep(30)%"), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    _wait_for_server(database)  # the postmaster restarts every backend after a kill
    assert proc.returncode == 3, out + err
    error = json.loads(out)["error"]
    assert error["code"] == "SERVER_KILLED" and "killed" in error["message"] and "qbctl budget" in error["hint"]
    _wait_for_server(database)
    (project / "sql" / "schema" / "0006_slow.sql").unlink()
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "db", "seed", "--no-redis", "--symbols", "200", "--days", "20"],
        env={**env_for(database), "PYTHONPATH": str(ROOT)},
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.kill(_backend_pid(database, "%COPY%"), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    _wait_for_server(database)
    assert proc.returncode == 3, out + err
    assert err.startswith("error: postgres: the server process running db seed was killed"), err
    assert "error: unexpected" not in err and "Traceback" not in err


def test_migrate_and_seed_say_each_thing_once(database, project):
    proc = qbctl("db", "migrate", "--without-timescaledb", env=env_for(database), cwd=project)
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    for name in ("0002_market_data.sql", "0005_performance_and_logs.sql"):
        assert said.count(name) == 1, said
    seeded = qbctl("db", "seed", "--no-redis", "--symbols", "1", "--days", "3", env=env_for(database), cwd=project)
    lines = (seeded.stdout + seeded.stderr).splitlines()
    assert seeded.returncode == 0 and [line.split()[0] for line in lines].count("market_data") == 1, lines
