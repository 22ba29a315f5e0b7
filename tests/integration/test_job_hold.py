"""Holding TimescaleDB's jobs (qbctl.db.jobs) on a server whose scheduler runs them: a run under way is
waited for and never cancelled, none starts while held, each job gets its next start back, and a run
that a refresh collided with is run again."""

from __future__ import annotations

import time

import psycopg
import pytest

from qbctl.db import connect, jobs
from tests.integration.test_migrate import migrate

pytestmark = [pytest.mark.timescaledb, pytest.mark.usefixtures("needs_timescaledb")]

SLEEPY = """CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE PROCEDURE sleepy(job_id int, config jsonb) LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(3); END $$;"""


def sleepy(url) -> int:
    """A job that runs 3 seconds, every second."""
    sql(url, SLEEPY)
    return sql(url, "SELECT add_job('sleepy', INTERVAL '1 second')")[0][0]


def sql(url, text):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text)
        return cur.fetchall() if cur.description else None


def stats(url, job):
    return sql(
        url,
        "SELECT total_runs, total_failures, last_run_status, job_status, next_start::text, "
        f"total_successes FROM timescaledb_information.job_stats WHERE job_id = {job}",
    )[0]


def wait_for(check, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def test_a_run_under_way_is_waited_for_never_cancelled_and_the_job_gets_its_start_back(scheduler_database):
    url = scheduler_database
    job = sleepy(url)
    wait_for(lambda: stats(url, job)[3] == "Running")
    told = []
    with psycopg.connect(url, autocommit=True) as conn:
        held = jobs.hold(connect.psycopg_rows(conn), said=told.append)
    runs, failures, status, state, next_start, successes = stats(url, job)
    assert told == [[job]] and held.waited == [job] and held.jobs == [job]
    assert status == "Success" and failures == 0 and state != "Running"  # it ended by itself, not cancelled
    assert next_start == "infinity"
    time.sleep(2.5)  # a job scheduled every second does not start while held
    assert stats(url, job)[0] == runs
    with psycopg.connect(url, autocommit=True) as conn:
        jobs.release(connect.psycopg_rows(conn), held)
    wait_for(lambda: stats(url, job)[0] > runs)  # given back: it runs again
    assert stats(url, job)[1] == 0


def test_paused_jobs_are_left_alone_and_nothing_to_hold_is_fine(scheduler_database, database):
    url = scheduler_database
    job = sleepy(url)
    sql(url, f"SELECT alter_job({job}, scheduled => false)")
    with psycopg.connect(url, autocommit=True) as conn:
        held = jobs.hold(connect.psycopg_rows(conn))
        assert held.jobs == []
        jobs.release(connect.psycopg_rows(conn), held)
    assert sql(url, f"SELECT scheduled FROM timescaledb_information.jobs WHERE job_id = {job}")[0][0] is False
    with psycopg.connect(database, autocommit=True) as conn:  # no TimescaleDB in it: nothing to hold
        assert jobs.hold(connect.psycopg_rows(conn)).jobs == []


def test_a_refresh_that_collided_is_run_again_and_its_failure_not_left_behind(scheduler_database, project):
    url = scheduler_database
    assert migrate(url, project).returncode == 0
    (job, mat_id) = sql(
        url,
        "SELECT j.id, c.mat_hypertable_id FROM _timescaledb_config.bgw_job j"
        " JOIN _timescaledb_catalog.continuous_agg c ON c.mat_hypertable_id = j.hypertable_id"
        " WHERE c.user_view_name = 'market_data_5m'"
        " AND j.proc_name = 'policy_refresh_continuous_aggregate'",
    )[0]
    held_by_seed = sql(
        url,
        "SELECT j.job_id FROM timescaledb_information.jobs j WHERE "
        + jobs.REFRESH_OF.format(table="('public', 'market_data')")
        + " ORDER BY 1",
    )
    assert (job,) in held_by_seed and len(held_by_seed) == 3  # the three bars' policies, whatever the view says
    wait_for(lambda: (stats(url, job)[0] or 0) >= 1 and stats(url, job)[3] != "Running")
    with psycopg.connect(url, autocommit=True) as other:
        # Another session's refresh in progress over all of time, as TimescaleDB registers one.
        other.execute(
            "INSERT INTO _timescaledb_catalog.continuous_aggs_jobs_refresh_ranges VALUES"
            " (%s, -9223372036854775808, 9223372036854775807, pg_backend_pid(), 0, now())",
            (mat_id,),
        )
        with psycopg.connect(url, autocommit=True) as conn:
            rows = connect.psycopg_rows(conn)
            began = rows("SELECT now()::text")[0][0]
            sql(url, f"SELECT alter_job({job}, next_start => now())")
            wait_for(lambda: stats(url, job)[2] == "Failed")
            error = sql(
                url,
                f"SELECT err_message FROM timescaledb_information.job_errors WHERE job_id = {job}"
                " ORDER BY start_time DESC LIMIT 1",
            )[0][0]
            assert "due to a concurrent refresh" in error
            other.execute(
                "DELETE FROM _timescaledb_catalog.continuous_aggs_jobs_refresh_ranges WHERE pid = pg_backend_pid()"
            )
            assert jobs.rerun_collisions(rows, [job], began) == []
    assert stats(url, job)[2] == "Success"


def test_seed_waits_for_a_refresh_policy_s_run_and_leaves_every_job_as_it_was(scheduler_database, project):
    # A refresh policy's run under way (held up by a row lock) when `db seed` refreshes the
    # bars: seed waits for it, never cancels it, and afterwards every policy is scheduled with a next start.
    import subprocess
    import sys

    from tests.helpers import ROOT
    from tests.integration.test_migrate import env_for

    url = scheduler_database
    assert migrate(url, project).returncode == 0
    (job,) = sql(
        url,
        "SELECT j.id FROM _timescaledb_config.bgw_job j JOIN _timescaledb_catalog.continuous_agg c"
        " ON c.mat_hypertable_id = j.hypertable_id WHERE c.user_view_name = 'market_data_5m'"
        " AND j.proc_name = 'policy_refresh_continuous_aggregate'",
    )[0]
    wait_for(lambda: (stats(url, job)[0] or 0) >= 1 and stats(url, job)[3] != "Running")
    runs = stats(url, job)[0]
    with psycopg.connect(url) as blocker:
        # The row a refresh moves its invalidation threshold in: the run registers its window, then waits.
        blocker.execute("SELECT * FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold FOR UPDATE")
        sql(url, f"SELECT alter_job({job}, next_start => now())")
        wait_for(lambda: stats(url, job)[3] == "Running")
        seed = subprocess.Popen(
            [sys.executable, "-m", "qbctl", "db", "seed", "--symbols", "2", "--days", "3", "--no-redis"],
            env={**env_for(url), "PYTHONPATH": str(ROOT)},
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert seed.poll() is None  # waiting for the run, which the lock holds up
        blocker.rollback()
    out, err = seed.communicate(timeout=120)
    assert seed.returncode == 0, out + err
    assert f"TimescaleDB job {job} is running; waiting for its run to end before seed runs the policies" in err
    total, failures, status, _, _, _ = stats(url, job)
    assert total > runs and failures == 0 and status == "Success"  # its run ended by itself, not cancelled
    left = sql(
        url,
        "SELECT j.job_id, j.scheduled, s.next_start::text FROM timescaledb_information.jobs j"
        " JOIN timescaledb_information.job_stats s USING (job_id) WHERE j.job_id >= 1000",
    )
    assert all(scheduled and next_start not in (None, "infinity") for _, scheduled, next_start in left), left
