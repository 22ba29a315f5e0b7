"""Continuous aggregates through verify, and TimescaleDB jobs judged by whether they really run: with the
scheduler on (policies run by themselves), off, starved of background workers, paused, and running while
status and verify read the catalog."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from qbctl.config import settings as S
from tests.helpers import qbctl
from tests.integration.conftest import _database, _server
from tests.integration.test_migrate import env_for, migrate

pytestmark = [
    pytest.mark.timescaledb("the tests check continuous aggregates and the jobs TimescaleDB runs"),
    pytest.mark.usefixtures("needs_timescaledb"),
]

TICKS = """-- qbctl: requires timescaledb
CREATE TABLE ticks (time timestamptz NOT NULL, sym text NOT NULL, px numeric NOT NULL);
SELECT create_hypertable('ticks', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE MATERIALIZED VIEW ticks_1m WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS time, sym, max(px) AS high FROM ticks GROUP BY 1, sym
WITH NO DATA;
SELECT add_continuous_aggregate_policy('ticks_1m', start_offset => INTERVAL '1 hour', end_offset => INTERVAL '1 minute',
                                       schedule_interval => INTERVAL '1 minute');
"""


def settings_for(url, project, **extra):
    return S.load(environ={"DATABASE_URL": url, **extra}, cwd=project)


def sql(url, text, *params):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text, params or None)
        return cur.fetchall() if cur.description else None


def drift_of(url, project):
    proc = qbctl("db", "verify", "--json", env=env_for(url), cwd=project)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, {d["item"]: d for d in json.loads(proc.stdout)["drift"]}


def test_caggs_in_schema_and_policy_files_are_verified(database, project):
    (project / "sql" / "schema" / "0006_ticks.sql").write_text(TICKS)
    proc = migrate(database, project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, drift = drift_of(database, project)
    assert code == 0, drift  # no _materialized_hypertable_N reported, the schema file's hypertable declared
    internal = sql(
        database,
        "SELECT count(*) FROM timescaledb_information.dimensions WHERE hypertable_schema = '_timescaledb_internal'",
    )[0][0]
    assert internal == 4  # the QB bars' three and ticks_1m's
    (job,) = sql(database, "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name = 'ticks_1m'")[0]
    sql(
        database,
        "SELECT alter_job(job_id, config => jsonb_set(config, '{start_offset}', '\"2 hours\"'))"
        " FROM timescaledb_information.jobs WHERE job_id = %s",
        job,
    )
    sql(database, "SELECT remove_continuous_aggregate_policy('market_data_1h')")
    sql(database, "DROP MATERIALIZED VIEW market_data_5m")
    sql(
        database,
        "CREATE MATERIALIZED VIEW stray WITH (timescaledb.continuous) AS SELECT time_bucket('1 hour', time),"
        " max(px) FROM ticks GROUP BY 1 WITH NO DATA",
    )
    code, drift = drift_of(database, project)
    assert code == 1
    assert drift[f"refresh policy ticks_1m (job {job})"]["problem"] == "different"
    assert drift[f"refresh policy ticks_1m (job {job})"]["declared"] == "1 hour .. 1 minute, every 1 minute"
    assert drift["refresh policy market_data_1h"]["problem"] == "missing"
    assert drift["continuous aggregate market_data_5m"]["problem"] == "missing"
    assert drift["continuous aggregate stray"]["problem"] == "extra"
    assert not [d for d in drift if d.startswith("hypertable")], drift  # materialization hypertables are no drift
    human = qbctl("db", "verify", env=env_for(database), cwd=project)
    assert "error:" in human.stderr and "refresh policy ticks_1m" in human.stdout


def test_a_cagg_created_with_data_runs_statement_by_statement_by_itself(database, project):
    assert migrate(database, project).returncode == 0
    hypertable = "SELECT create_hypertable('ticks', 'time', chunk_time_interval => INTERVAL '1 day');"
    with_data = TICKS.replace("WITH NO DATA;", ";")
    (project / "sql" / "schema" / "0006_ticks.sql").write_text(
        with_data.replace(hypertable, hypertable + " INSERT INTO ticks VALUES (now(), 'a', 1);")
    )
    proc = migrate(database, project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["one_by_one"]["sql/schema/0006_ticks.sql"].startswith(
        "CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) WITH DATA (line 4)"
    )
    assert sql(database, "SELECT count(*) FROM ticks_1m")[0][0] == 1
    assert drift_of(database, project)[0] == 0


def test_without_a_scheduler_jobs_that_never_ran_fail_health_status_and_verify(database, project, monkeypatch):
    from qbctl.checks import health
    from qbctl.db import status, timescale
    from qbctl.engine.runtime import Runtime

    assert migrate(database, project).returncode == 0
    settings = settings_for(database, project)
    rt = Runtime()
    fresh = health.check_postgres(settings, 2, rt=rt)
    assert {c.name: c.ok for c in fresh}["timescaledb jobs"]  # just migrated: not due long enough to judge
    monkeypatch.setattr(timescale, "JOB_GRACE_SECONDS", 0)  # as if server and migrate were long ago
    checks = {c.name: c for c in health.check_postgres(settings, 2, rt=rt)}
    assert not checks["timescaledb jobs"].ok
    assert (
        "never ran: no TimescaleDB scheduler runs for this database (timescaledb.max_background_workers=0)"
        in checks["timescaledb jobs"].detail
    )
    st = status.status(settings, rt=rt)
    assert not st.ok and st.error.code == "JOBS_FAILED"
    assert {j["why"].split(":")[0] for j in st.jobs if j["kind"] in timescale.PROC} == {"never ran"}
    result = timescale.verify(settings, rt=rt)
    rt.close()
    assert not result.ok and {d["problem"] for d in result.drift} == {"not running"}
    assert len(result.drift) == 16  # 7 + 6 policies and 3 refresh policies, none ran


@pytest.fixture(scope="module")
def starved_server():
    """TimescaleDB with 2 background workers: the launcher and one scheduler, none left for a job."""
    yield from _server(True, workers=2)


def test_jobs_that_cannot_launch_are_named_with_the_reason(starved_server, project, monkeypatch):
    from qbctl.checks import health
    from qbctl.db import timescale
    from qbctl.engine.runtime import Runtime

    for url in _database(starved_server):
        assert migrate(url, project).returncode == 0
        deadline = time.monotonic() + 60
        while "out of background workers" not in starved_server["log"].read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "out of background workers" in starved_server["log"].read_text()
        assert sql(url, "SELECT count(*) FROM timescaledb_information.job_stats WHERE total_runs > 0")[0][0] == 0
        monkeypatch.setattr(timescale, "JOB_GRACE_SECONDS", 0)
        with Runtime() as rt:
            checks = {c.name: c for c in health.check_postgres(settings_for(url, project), 2, rt=rt)}
        detail = checks["timescaledb jobs"].detail
        assert (
            not checks["timescaledb jobs"].ok
            and "the scheduler has not started it: out of background workers?" in detail
            and "timescaledb.max_background_workers=2" in detail
        )


def test_policies_run_by_themselves_with_the_scheduler_on(scheduler_database, project):
    url = scheduler_database
    (project / "sql" / "schema" / "0006_sensor.sql").write_text(
        "-- qbctl: requires timescaledb\n"
        "CREATE TABLE sensor (time timestamptz NOT NULL, id int NOT NULL, v float8);\n"
        "SELECT create_hypertable('sensor', by_range('time', INTERVAL '1 day'));\n"
        "INSERT INTO sensor SELECT now() - i * INTERVAL '1 hour', i % 5, i FROM generate_series(1, 24 * 20) i;\n"
        "ALTER TABLE sensor SET (timescaledb.compress, timescaledb.compress_segmentby = 'id');\n"
        "SELECT add_compression_policy('sensor', compress_after => INTERVAL '3 days',"
        " schedule_interval => INTERVAL '5 seconds');\n"
    )
    proc = migrate(url, project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = dict(
            sql(
                url,
                "SELECT j.hypertable_name, COALESCE(s.total_runs, 0) FROM timescaledb_information.jobs j"
                " JOIN timescaledb_information.job_stats s USING (job_id)"
                " WHERE j.proc_name = 'policy_compression'",
            )
        )
        compressed = sql(
            url,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'sensor' AND is_compressed",
        )[0][0]
        if runs.get("sensor", 0) >= 2 and compressed >= 15 and all(runs.values()):
            break
        time.sleep(0.5)
    assert runs.get("sensor", 0) >= 2 and compressed >= 15, (runs, compressed)  # run by the scheduler, twice
    assert all(runs.values()), runs  # the QB policies ran at once too, nobody called run_job
    status = qbctl("db", "status", "--json", env=env_for(url), cwd=project)
    assert status.returncode == 0, status.stdout
    jobs = {(j["kind"], j["table"]): j for j in json.loads(status.stdout)["jobs"]}
    assert jobs[("refresh", "market_data_1d")]["total_runs"] >= 1
    assert jobs[("compression", "sensor")]["why"].startswith(("next run", "running since"))
    assert drift_of(url, project)[0] == 0


SLEEPY = """CREATE PROCEDURE sleepy(job_id int, config jsonb) LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(5); END $$;
SELECT add_job('sleepy', INTERVAL '1 second');
"""


def test_a_running_job_while_status_verify_and_health_read(scheduler_database, project):
    url = scheduler_database
    assert migrate(url, project).returncode == 0
    sql(url, SLEEPY)
    deadline = time.monotonic() + 30
    while not sql(
        url,
        "SELECT count(*) FROM timescaledb_information.job_stats WHERE job_status = 'Running'"
        " AND next_start = '-infinity'",
    )[0][0]:
        assert time.monotonic() < deadline, "the sleepy job never ran"
        time.sleep(0.2)
    status = qbctl("db", "status", "--json", env=env_for(url), cwd=project)
    assert status.returncode == 0, status.stdout + status.stderr
    sleepy = [j for j in json.loads(status.stdout)["jobs"] if j["kind"] == "sleepy"][0]
    assert sleepy["next_start"] == "-infinity" and sleepy["why"].startswith("running since")
    assert qbctl("db", "verify", env=env_for(url), cwd=project).returncode == 0
    human = qbctl("db", "status", env=env_for(url), cwd=project)
    assert human.returncode == 0 and "running since" in human.stdout
    health = qbctl("health", "--json", env=env_for(url, QBCTL_PROJECT="qbtest-none"), cwd=project)
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    assert checks["timescaledb jobs"]["ok"], checks["timescaledb jobs"]


def test_a_paused_policy_fails_verify_and_health(scheduler_database, project):
    url = scheduler_database
    assert migrate(url, project).returncode == 0
    (job,) = sql(
        url,
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        " AND hypertable_name = 'system_logs'",
    )[0]
    sql(url, "SELECT alter_job(%s, scheduled => false)", job)
    code, drift = drift_of(url, project)
    assert code == 1 and drift[f"job {job} (retention on system_logs)"]["problem"] == "paused"
    health = qbctl("health", "--json", env=env_for(url, QBCTL_PROJECT="qbtest-none"), cwd=project)
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    assert not checks["timescaledb jobs"]["ok"] and "paused" in checks["timescaledb jobs"]["detail"]


def test_seed_fills_the_bars_and_daily_bars_match_the_minutes(database, project, redis_server):
    assert migrate(database, project).returncode == 0
    env = env_for(database, REDIS_URL=redis_server["url"])
    proc = qbctl("db", "seed", "--symbols", "2", "--days", "10", "--no-redis", "--json", env=env, cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = json.loads(proc.stdout)["rows"]
    assert counts["market_data_5m"] > counts["market_data_1h"] > counts["market_data_1d"] > 0
    bars = sql(database, "SELECT time, symbol, open, high, low, close, volume FROM market_data_1d ORDER BY 1, 2")
    minutes = sql(
        database,
        "SELECT time_bucket('1 day', time, 'Asia/Seoul'), symbol, first(open, time), max(high),"
        " min(low), last(close, time), sum(volume) FROM market_data GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert bars == minutes
    (table,) = sql(
        database,
        "SELECT format('%I.%I', materialization_hypertable_schema,"
        " materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates"
        " WHERE view_name = 'market_data_1d'",
    )[0]
    materialized = sql(database, f"SELECT count(*) FROM {table}")[0][0]
    assert materialized >= len(bars) - 2  # read from the bars (all but each symbol's open day), not the minutes
