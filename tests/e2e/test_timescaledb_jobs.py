"""The default stack on the engine, with TimescaleDB in the image: migrate, the QB bars (continuous
aggregates), and the policy jobs run by TimescaleDB's own scheduler, not by a test calling run_job."""

from __future__ import annotations

import json
import shutil
import time

import psycopg
import pytest

from tests.helpers import ROOT, qbctl

pytestmark = pytest.mark.docker


def _url(env) -> str:
    return env["DATABASE_URL"].replace("localhost", "127.0.0.1")


@pytest.mark.timescaledb("the test checks the QB bars and the policy jobs TimescaleDB's scheduler runs")
@pytest.mark.usefixtures("needs_standin_timescaledb")
def test_the_stack_migrates_the_bars_and_its_scheduler_runs_the_policies(project_env, tmp_path):
    # The defaults: 5 TimescaleDB workers (the launcher, the schedulers of postgres and of the database, which
    # run from the image's first start, and two jobs at a time; the others wait their turn), and
    # max_worker_processes made to hold them (so PostgreSQL never refuses one).
    env = dict(project_env)
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    up = qbctl("up", "--no-ui", env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    migrate = qbctl("db", "migrate", "--json", env=env, cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "warning" not in migrate.stderr.lower(), migrate.stderr  # the image's first migrate: no TimescaleDB advice
    result = json.loads(migrate.stdout)
    assert result["timescaledb"], result
    assert "sql/policies/040_continuous_aggregates.sql" in [a["file"] for a in result["applied"]]
    with psycopg.connect(_url(env), autocommit=True) as conn:
        caggs = {r[0] for r in conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
        assert caggs == {"market_data_5m", "market_data_1h", "market_data_1d"}
        deadline = time.monotonic() + 60
        while True:
            runs = dict(
                conn.execute(
                    "SELECT j.proc_name || ' ' || j.hypertable_name, COALESCE(s.total_runs, 0)"
                    " FROM timescaledb_information.jobs j LEFT JOIN timescaledb_information.job_stats s USING (job_id)"
                    " WHERE j.job_id >= 1000"
                ).fetchall()
            )
            if all(runs.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert len(runs) == 16 and all(runs.values()), runs  # every policy ran once, started by the scheduler
    assert runs["policy_refresh_continuous_aggregate market_data_5m"] >= 1
    verify = qbctl("db", "verify", "--json", env=env, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout
    assert json.loads(verify.stdout)["checked"] == 31
    seed = qbctl("db", "seed", "--symbols", "2", "--days", "12", "--no-redis", "--json", env=env, cwd=tmp_path)
    assert seed.returncode == 0, seed.stdout + seed.stderr
    seeded = json.loads(seed.stdout)
    assert seeded["rows"]["market_data_1d"] > 0
    # Production's shape: the policies' jobs compressed every chunk older than 7 days, as db status counts them.
    assert seeded["compression"]["market_data"]["compressed"] > 0
    with psycopg.connect(_url(env), autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE NOT is_compressed"
            " AND hypertable_name = 'market_data' AND range_end <= now() - interval '7 days'"
        ).fetchone()[0]
    assert left == 0
    figures = {
        h["name"]: {"chunks": h["chunks"], "compressed": h["compressed_chunks"]}
        for h in json.loads(qbctl("db", "status", "--json", env=env, cwd=tmp_path).stdout)["hypertables"]
    }
    assert all(figures[t] == c for t, c in seeded["compression"].items()), (figures, seeded["compression"])
    for _ in range(5):  # green, round after round of the scheduler's own runs after seed gave the jobs back
        health = qbctl("health", "--json", env=env, cwd=tmp_path)
        checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
        assert health.returncode == 0 and checks["timescaledb jobs"]["ok"] and checks["migrations"]["ok"], checks
        time.sleep(1)
    status = qbctl("db", "status", env=env, cwd=tmp_path)
    assert status.returncode == 0 and "next run" in status.stdout and "market_data_1d" in status.stdout
