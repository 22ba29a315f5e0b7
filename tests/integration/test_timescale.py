"""Hypertables, policies, convergence and verify on a real TimescaleDB (skipped where it is absent)."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.helpers import qbctl
from tests.integration.test_migrate import env_for, migrate

pytestmark = [
    pytest.mark.timescaledb("the tests check hypertables, policies, their convergence and verify on the extension"),
    pytest.mark.usefixtures("needs_timescaledb"),
]


def jobs(url, proc):
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT job_id, hypertable_name, COALESCE(config->>'drop_after', "
            "config->>'compress_after') FROM timescaledb_information.jobs WHERE proc_name = %s"
            " ORDER BY hypertable_name",
            (proc,),
        ).fetchall()


def verify(url, cwd, **extra):
    return qbctl("db", "verify", "--json", env=env_for(url, **extra), cwd=cwd)


def test_hypertables_and_policies_as_declared(database, project):
    assert migrate(database, project).returncode == 0
    with psycopg.connect(database) as conn:
        hts = dict(conn.execute("SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"))
        seg = dict(
            conn.execute(
                "SELECT hypertable::text, segmentby FROM timescaledb_information.hypertable_compression_settings"
            )
        )
    assert hts == {
        "market_data": True,
        "technical_indicators": True,
        "trades": True,
        "system_logs": True,
        "strategy_performance": False,
    }
    assert seg["market_data"] == "symbol,timeframe" and seg["trades"] == "symbol"
    assert [(t, i) for _, t, i in jobs(database, "policy_retention")] == [
        ("market_data", "365 days"),
        ("market_data_1d", "3650 days"),
        ("market_data_1h", "1095 days"),
        ("market_data_5m", "365 days"),
        ("system_logs", "30 days"),
        ("technical_indicators", "365 days"),
    ]
    assert {t: i for _, t, i in jobs(database, "policy_compression")} == {
        "market_data": "7 days",
        "technical_indicators": "7 days",
        "trades": "7 days",
        "system_logs": "7 days",
        "market_data_5m": "30 days",
        "market_data_1h": "30 days",
        "market_data_1d": "30 days",
    }
    ok = verify(database, project)
    assert ok.returncode == 0, ok.stdout
    # hypertables 5, compression 4 + 3 caggs, policies 7 + 6 on caggs, caggs 3, refresh policies 3
    assert json.loads(ok.stdout)["checked"] == 5 + 7 + 13 + 3 + 3


def test_a_changed_setting_converges_to_exactly_one_job(database, project):
    assert migrate(database, project).returncode == 0
    proc = migrate(database, project, DATA_RETENTION_DAYS="400")
    assert proc.returncode == 0
    assert [a["file"] for a in json.loads(proc.stdout)["applied"]] == [
        "sql/policies/030_retention.sql",
        "sql/policies/040_continuous_aggregates.sql",
    ]  # the 5-minute bars' too
    retention = jobs(database, "policy_retention")
    assert [(t, i) for _, t, i in retention if t in ("market_data", "market_data_5m")] == [
        ("market_data", "400 days"),
        ("market_data_5m", "400 days"),
    ]
    assert verify(database, project, DATA_RETENTION_DAYS="400").returncode == 0
    stale = verify(database, project)  # the default (365) is no longer what the database has
    assert stale.returncode == 1
    drift = json.loads(stale.stdout)["drift"]
    assert {(d["item"].split(" (")[0], d["problem"], d["declared"], d["actual"]) for d in drift} == {
        ("retention policy market_data", "different", "365 days", "400 days"),
        ("retention policy technical_indicators", "different", "365 days", "400 days"),
        ("retention policy market_data_5m", "different", "365 days", "400 days"),
    }


def test_verify_catches_a_removed_policy_and_a_changed_chunk_interval(database, project):
    assert migrate(database, project).returncode == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT remove_retention_policy('system_logs')")
        conn.execute("SELECT set_chunk_time_interval('trades', INTERVAL '1 day')")
    proc = verify(database, project)
    assert proc.returncode == 1
    drift = {d["item"]: d for d in json.loads(proc.stdout)["drift"]}
    assert drift["retention policy system_logs"]["problem"] == "missing"
    assert drift["hypertable trades"]["problem"] == "different"
    human = qbctl("db", "verify", env=env_for(database), cwd=project)
    assert "retention policy system_logs" in human.stdout and "missing" in human.stdout
    assert "error: 2 difference(s)" in human.stderr


def test_seeded_data_is_compressed_by_the_job_and_old_chunks_dropped_by_retention(database, project, redis_server):
    assert migrate(database, project).returncode == 0
    env = env_for(database, REDIS_URL=redis_server["url"])
    assert qbctl("db", "seed", "--symbols", "2", "--days", "14", "--no-redis", env=env, cwd=project).returncode == 0
    (compress_job,) = [j for j, t, _ in jobs(database, "policy_compression") if t == "market_data"]
    (retention_job,) = [j for j, t, _ in jobs(database, "policy_retention") if t == "market_data"]
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CALL run_job(%s)", (compress_job,))
        old_uncompressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'market_data'"
            " AND range_end < now() - INTERVAL '7 days' AND NOT is_compressed"
        ).fetchone()[0]
        compressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'market_data'"
            " AND is_compressed"
        ).fetchone()[0]
        assert old_uncompressed == 0 and compressed > 0
        conn.execute("INSERT INTO market_data VALUES (now() - INTERVAL '400 days', '005930', '1m', 1, 1, 1, 1, 1)")
        assert (
            conn.execute("SELECT count(*) FROM market_data WHERE time < now() - INTERVAL '365 days'").fetchone()[0] == 1
        )
        conn.execute("CALL run_job(%s)", (retention_job,))
        assert (
            conn.execute("SELECT count(*) FROM market_data WHERE time < now() - INTERVAL '365 days'").fetchone()[0] == 0
        )
    status = qbctl("db", "status", "--json", env=env, cwd=project)
    md = [h for h in json.loads(status.stdout)["hypertables"] if h["name"] == "market_data"][0]
    assert md["compressed_chunks"] > 0 and md["compression_ratio"] > 1
