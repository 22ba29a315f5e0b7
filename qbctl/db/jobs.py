"""Holding TimescaleDB's jobs while qbctl works on what they work on.

`db seed` refreshes the continuous aggregates, `restore` checks restored data, `upgrade` updates the
extension and `db reset` drops it. A policy job running meanwhile fails (a refresh over an overlapping
window: "could not refresh continuous aggregate ... due to a concurrent refresh", kept as the job's last
status until its next run) or changes what is checked. On the images users pull, TimescaleDB's
scheduler already runs when `db migrate` creates the policies, so their first runs start at once, in
the middle of whatever comes next. So that work holds the jobs first:

- **held, not paused**: each job's next start is set to 'infinity' (`alter_job(next_start => ...)`,
  TimescaleDB's documented way to hold a job). Pausing (`scheduled => false`) would make the scheduler
  cancel a run under way, which TimescaleDB records as that job's failure ("canceling statement due to
  user request").
- **a run under way ends first**: it is waited for, never cancelled. When it ends TimescaleDB sets its
  next start again, so the hold is put back, until no held job runs and each waits for 'infinity';
  checked once more a moment later, in case the scheduler started one from what it knew before the
  hold (a start it decided is committed within milliseconds).
- **released as they were**: each job's next start given back (the one it had, or the one its run set;
  now, when it was due). Jobs that were paused are never touched.
- **a failure qbctl caused is not left behind**: a run of a held job that failed during the hold
  "due to a concurrent refresh" (qbctl's own refresh overlapped it) is run again by the scheduler
  right after the release and waited for (`rerun_collisions`).

Everything goes over `Rows` (text values), so psycopg (seed, reset) and psql in the container
(restore, upgrade) share it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from qbctl.db.connect import Rows
from qbctl.db.timescale import extension_schema
from qbctl.errors import Unavailable

HOLD_WAIT = 120.0  # seconds a run under way may take to end before the work goes ahead without it
SETTLE = 0.5  # seconds between seeing every held job idle and the check that confirms it
POLL = 0.2
# The refresh policies of the continuous aggregates of a hypertable (j: timescaledb_information.jobs; table:
# an SQL row (schema, name)). The jobs view names a refresh policy's aggregate by its view (2.28) or by its
# materialization hypertable (older 2.x): either matches.
REFRESH_OF = (
    "j.proc_name = 'policy_refresh_continuous_aggregate' AND EXISTS (SELECT FROM"
    " timescaledb_information.continuous_aggregates c WHERE (c.hypertable_schema, c.hypertable_name) ="
    " {table} AND (j.hypertable_schema, j.hypertable_name) IN ((c.view_schema, c.view_name),"
    " (c.materialization_hypertable_schema, c.materialization_hypertable_name)))"
)
ALL_POLICIES = "true"  # every scheduled job of the database (the telemetry job, id 1, is never held)


@dataclass
class Hold:
    give_back: dict[int, str | None] = field(default_factory=dict)  # job -> next start to give back (None: now)
    began: str = ""  # the server's clock when the hold began
    waited: list[int] = field(default_factory=list)  # jobs whose run under way was waited for
    ts: str = "public"  # TimescaleDB's schema, which qbctl's calls name (the search_path may leave it out)

    @property
    def jobs(self) -> list[int]:
        return sorted(self.give_back)


def _ids(jobs) -> str:
    return "ARRAY[" + ",".join(str(int(j)) for j in jobs) + "]::int[]"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def available(rows: Rows) -> bool:
    """Whether this database has TimescaleDB's job catalog (the extension) to hold anything in."""
    return rows("SELECT (pg_catalog.to_regclass('timescaledb_information.jobs') IS NOT NULL)::text")[0][0] == "true"


STATE_SQL = """
SELECT j.job_id::text, st.next_start::text,
       (EXISTS (SELECT FROM pg_catalog.pg_stat_activity a WHERE a.datname = pg_catalog.current_database()
                AND j.application_name IN (a.application_name, a.backend_type))
        OR COALESCE(st.last_finish = '-infinity' AND st.last_start > pg_catalog.now() - interval '10 seconds',
                    false))::text
FROM timescaledb_information.jobs j
LEFT JOIN _timescaledb_internal.bgw_job_stat st ON st.job_id = j.job_id
WHERE j.job_id = ANY({ids})
"""
# A run is under way while its worker is in pg_stat_activity, and in the instant between the scheduler
# recording its start (last_finish -infinity) and the worker showing up. An old unfinished start is a
# crash (the server stopped under it), not a run.


def hold(
    rows: Rows,
    where: str = ALL_POLICIES,
    *,
    wait: float = HOLD_WAIT,
    settle: float = SETTLE,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    said: Callable[[list[int]], None] | None = None,
) -> Hold:
    """Hold the scheduled jobs matching `where` (a condition on `timescaledb_information.jobs j`) and
    wait until none of them runs. `said(jobs)` is called once when a run under way is waited for.
    When one is still running after `wait` seconds, the hold is released and UNAVAILABLE raised."""
    held = Hold()
    if not available(rows):
        return held
    held.ts = extension_schema(rows)
    found = rows(
        "SELECT pg_catalog.now()::text, j.job_id::text, st.next_start::text"
        " FROM timescaledb_information.jobs j"
        " LEFT JOIN _timescaledb_internal.bgw_job_stat st ON st.job_id = j.job_id"
        f" WHERE j.scheduled AND j.job_id >= 1000 AND ({where}) ORDER BY j.job_id"
    )
    if not found:
        return held
    held.began = found[0][0]
    held.give_back = {int(j): _finite(n) for _, j, n in found}
    deadline = clock() + wait
    quiet_once = False
    try:
        while True:
            state = rows(STATE_SQL.format(ids=_ids(held.jobs)))
            gone = set(held.jobs) - {int(j) for j, _, _ in state}
            for j in gone:  # deleted meanwhile (db reset drops them): nothing to give back
                held.give_back.pop(j)
            loose = [int(j) for j, n, _ in state if n != "infinity"]
            for j, n, _ in state:
                if n != "infinity" and _finite(n):
                    held.give_back[int(j)] = _finite(n)  # the next start its run just set
            if loose:
                rows(
                    "SELECT pg_catalog.count(*)::text FROM pg_catalog.unnest(" + _ids(loose) + ") i,"
                    f" LATERAL {held.ts}.alter_job(i, next_start => 'infinity', if_exists => true)"
                )
            running = [int(j) for j, _, r in state if r == "true"]
            if running:
                quiet_once = False
                if not held.waited and said:
                    said(running)
                held.waited = sorted(set(held.waited) | set(running))
                if clock() > deadline:
                    raise Unavailable(
                        f"TimescaleDB job {running[0]} has been running for more than {wait:.0f}s; qbctl waits for "
                        "a job's run to end before it works on the same data, and never cancels one",
                        hint="try again once it has ended (`qbctl db status` shows it running); nothing was changed",
                    )
                sleep(POLL)
                continue
            if not loose and quiet_once:
                return held
            quiet_once = not loose
            sleep(settle if quiet_once else POLL)
    except BaseException:
        release(rows, held, after_error=True)
        raise


def _finite(text: str | None) -> str | None:
    return text if text and "infinity" not in text else None


def release(rows: Rows, held: Hold, after_error: bool = False) -> None:
    """Each held job's next start given back: the time it had (or its run set), now when that has passed.
    `after_error`: called while another error is under way, which stays the one reported."""
    if not held.give_back:
        return
    if after_error:
        try:
            release(rows, held)
        except Exception:  # noqa: BLE001 - the error under way says what went wrong (a lost connection, ...)
            pass
        return
    values = ", ".join(f"({j}, {_lit(t) if t else 'NULL'}::timestamptz)" for j, t in held.give_back.items())
    # if_exists: a job deleted meanwhile (db reset drops them) is skipped.
    rows(
        f"SELECT pg_catalog.count(*)::text FROM (VALUES {values}) AS v(i, t), LATERAL {held.ts}.alter_job(v.i,"
        " next_start => greatest(COALESCE(v.t, pg_catalog.now()), pg_catalog.now()), if_exists => true)"
    )
    held.give_back = {}


COLLISIONS_SQL = """
SELECT s.job_id::text, s.last_run_started_at::text FROM timescaledb_information.job_stats s
WHERE s.job_id = ANY({ids}) AND s.last_run_status = 'Failed' AND s.last_run_started_at >= {began}::timestamptz
  AND EXISTS (SELECT FROM timescaledb_information.job_errors e WHERE e.job_id = s.job_id
              AND e.start_time >= {began}::timestamptz
              AND (e.sqlerrcode = '55P03' OR e.err_message LIKE '%due to a concurrent refresh%'))
"""


def rerun_collisions(
    rows: Rows,
    jobs: list[int],
    began: str,
    *,
    wait: float = HOLD_WAIT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[int]:
    """Jobs whose last run failed since `began` because a refresh overlapped it: run again by the
    scheduler now, and waited for. Returns those that still failed (or did not run within `wait`)."""
    if not jobs or not began:
        return []
    failed = {int(j): t for j, t in rows(COLLISIONS_SQL.format(ids=_ids(jobs), began=_lit(began)))}
    if not failed:
        return []
    ts = extension_schema(rows)
    rows(
        "SELECT pg_catalog.count(*)::text FROM pg_catalog.unnest(" + _ids(failed) + ") i,"
        f" LATERAL {ts}.alter_job(i, next_start => pg_catalog.now(), if_exists => true)"
    )
    deadline = clock() + wait
    while True:
        state = {
            int(j): (t, s)
            for j, t, s in rows(
                "SELECT job_id::text, last_run_started_at::text, COALESCE(last_run_status, '') FROM"
                f" timescaledb_information.job_stats WHERE job_id = ANY({_ids(failed)}) AND job_status <> 'Running'"
            )
        }
        done = {j for j, (t, s) in state.items() if t != failed[j] and s}
        if len(done) == len(failed) or clock() > deadline:
            return sorted(j for j in failed if j not in done or state[j][1] != "Success")
        sleep(POLL)


def jobs_text(jobs: list[int]) -> str:
    return ", ".join(str(j) for j in jobs)
