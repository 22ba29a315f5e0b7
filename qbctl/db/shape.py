"""Production's shape after `db seed`: what days of TimescaleDB's policies leave behind, at once.

On the VM every chunk older than COMPRESSION_AFTER_DAYS is compressed, the bars are materialized and
retention has dropped what is too old. A seed only loads rows; the policies' jobs would shape them at
their next start (12 hours for compression), or in the middle of the seed, so the local shape would
depend on timing. Seed therefore runs the policies' own jobs itself (`CALL run_job(id)`, the code path
the scheduler runs), in the order days of running leave them in:

1. the continuous aggregates refreshed: by the refresh policy's job where its window (start_offset
   back from now) reaches the seeded range; otherwise over all of history with
   refresh_continuous_aggregate, since the policy's run would leave the older seeded days out;
2. the retention policies' jobs: chunks older than their drop_after dropped (the bars stay, as on the VM);
3. the compression policies' jobs: every chunk older than compress_after compressed, partly compressed
   chunks (a re-seed wrote into them) compressed again.

The scheduler would run the same jobs meanwhile, so seed holds them from before its load until they
are done (db/jobs.py: a run under way ends first, each gets its next start back after).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from qbctl.db import connect, jobs, timescale
from qbctl.events import Event, Events, Status

# The hypertables seed writes, as its statements name them (a namesake in another schema is not one of them).
SEEDED = (
    "(SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
    " ON n.oid = c.relnamespace WHERE c.oid IN (pg_catalog.to_regclass('market_data'),"
    " pg_catalog.to_regclass('technical_indicators'), pg_catalog.to_regclass('trades'),"
    " pg_catalog.to_regclass('system_logs')))"
)
MARKET_DATA = (
    "(SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
    " ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass('market_data'))"
)
# Their policies, and those of market_data's continuous aggregates (j: timescaledb_information.jobs): nothing else.
POLICIES = (
    "j.proc_name IN ('policy_compression', 'policy_retention', 'policy_refresh_continuous_aggregate') AND"
    f" ((j.hypertable_schema, j.hypertable_name) IN {SEEDED} OR EXISTS (SELECT FROM"
    " timescaledb_information.continuous_aggregates c WHERE (c.hypertable_schema, c.hypertable_name) ="
    f" {MARKET_DATA} AND (j.hypertable_schema, j.hypertable_name) IN ((c.view_schema, c.view_name),"
    " (c.materialization_hypertable_schema, c.materialization_hypertable_name))))"
)
# The policies' jobs in the order seed runs them: refresh, retention, compression; by table within each.
JOBS_SQL = """
SELECT j.job_id, j.proc_name, j.hypertable_name, format('%%I.%%I', j.hypertable_schema, j.hypertable_name),
       j.config->>'start_offset',
       (j.config->>'start_offset') IS NULL OR pg_catalog.now() - (j.config->>'start_offset')::interval <= %s
FROM timescaledb_information.jobs j
WHERE j.scheduled AND j.job_id >= 1000 AND {policies}
ORDER BY array_position(ARRAY['policy_refresh_continuous_aggregate', 'policy_retention', 'policy_compression'],
                        j.proc_name::text), j.hypertable_name
"""
# The continuous aggregates of the market_data seed writes (the one `market_data` names, as its COPY finds it).
CAGGS_SQL = f"""
SELECT view_name, format('%I.%I', view_schema, view_name) FROM timescaledb_information.continuous_aggregates
WHERE (hypertable_schema, hypertable_name) = {MARKET_DATA} ORDER BY view_name
"""
# Per hypertable: its chunks, how many are compressed (the figures `db status` shows: same views), and how
# many are older than its compression policy's compress_after and still not compressed.
CHUNKS_SQL = """
SELECT h.hypertable_name, h.num_chunks, COALESCE(s.number_compressed_chunks, 0),
       (SELECT count(*) FROM timescaledb_information.chunks k
        WHERE (k.hypertable_schema, k.hypertable_name) = (h.hypertable_schema, h.hypertable_name)
          AND NOT k.is_compressed AND k.range_end <= pg_catalog.now() - (p.config->>'compress_after')::interval),
       p.config->>'compress_after'
FROM timescaledb_information.hypertables h
LEFT JOIN LATERAL {ts}.hypertable_compression_stats(format('%I.%I', h.hypertable_schema, h.hypertable_name)
                                                    ::regclass) s ON true
LEFT JOIN timescaledb_information.jobs p ON p.proc_name = 'policy_compression'
     AND (p.hypertable_schema, p.hypertable_name) = (h.hypertable_schema, h.hypertable_name)
WHERE h.compression_enabled AND (h.hypertable_schema, h.hypertable_name) IN {seeded}
ORDER BY h.hypertable_name
"""


@dataclass
class Shape:
    refreshed: dict[str, str] = field(default_factory=dict)  # aggregate -> how it was refreshed, and why
    jobs_run: list[int] = field(default_factory=list)  # the policies' jobs seed ran (run_job)
    chunks: dict[str, dict] = field(default_factory=dict)  # hypertable -> {chunks, compressed, left, compress_after}
    held: jobs.Hold | None = None


def hold(conn, events: Events) -> jobs.Hold:
    """The policies' jobs held (none runs from here on until `release`)."""

    def waiting(ids: list[int]) -> None:
        events(
            Event(
                Status.WAITING,
                f"TimescaleDB job {jobs.jobs_text(ids)} is running; waiting for its run to end "
                "before seed runs the policies itself",
            )
        )

    return jobs.hold(connect.psycopg_rows(conn), POLICIES, said=waiting)


def run(
    conn, held: jobs.Hold, first: datetime | None, events: Events, refresh_all: Callable[[str, str], None]
) -> Shape:
    """The held policies' jobs run once each, in order (refresh, retention, compression), on an autocommit
    connection; `first`: the oldest seeded minute (None: nothing seeded). `refresh_all(name, view)` refreshes
    an aggregate over all of history. Without TimescaleDB: nothing (an empty Shape)."""
    shape = Shape(held=held)
    if not jobs.available(connect.psycopg_rows(conn)):
        return shape
    ts = held.ts
    for job_id, proc, table, view, start, covers in conn.execute(
        JOBS_SQL.format(policies=POLICIES), (first,)
    ).fetchall():
        if job_id not in held.give_back:
            continue
        kind = timescale.KIND.get(proc, proc)
        if kind == "refresh" and not (covers or first is None):
            events(Event(Status.WORKING, f"refreshing {table} over all of history"))
            refresh_all(table, view)
            shape.refreshed[table] = (
                f"over all of history (refresh_continuous_aggregate): its refresh policy's "
                f"window, the last {start}, does not reach the oldest seeded minute"
            )
            continue
        what = {"refresh": "refreshing", "retention": "applying retention to"}.get(kind, "compressing")
        events(Event(Status.WORKING, f"{what} {table} (its policy's job {job_id})"))
        conn.execute(f"CALL {ts}.run_job(%s)", (job_id,))
        shape.jobs_run.append(job_id)
        if kind == "refresh":
            shape.refreshed[table] = f"by its refresh policy's job {job_id}: " + (
                "its window reaches the oldest seeded minute" if first else "nothing was seeded"
            )
    for name, view in conn.execute(CAGGS_SQL).fetchall():  # an aggregate with no refresh policy (held)
        if name not in shape.refreshed:
            events(Event(Status.WORKING, f"refreshing {name} over all of history"))
            refresh_all(name, view)
            shape.refreshed[name] = (
                "over all of history (refresh_continuous_aggregate): it has no scheduled refresh policy"
            )
    shape.chunks = chunks(conn, ts)
    return shape


def chunks(conn, ts: str) -> dict[str, dict]:
    """Each hypertable seed writes with compression on: its chunks, how many are compressed, how many older than its
    policy's compress_after are not."""
    found = conn.execute(CHUNKS_SQL.replace("{ts}", ts).replace("{seeded}", SEEDED)).fetchall()
    return {
        name: {"chunks": n, "compressed": k, "left": left, "compress_after": after} for name, n, k, left, after in found
    }


def release(conn, held: jobs.Hold, notes: list[str]) -> None:
    """Each job its next start back; a refresh run that failed as a concurrent refresh during the hold
    (another session's refresh) run again and waited for."""
    rows = connect.psycopg_rows(conn)
    ids = held.jobs  # before the release, which empties the hold
    jobs.release(rows, held)
    failed = jobs.rerun_collisions(rows, ids, held.began)
    if failed:
        notes.append(
            f"TimescaleDB job {jobs.jobs_text(failed)} failed during the seed and again when run once "
            "more: `qbctl db status` shows why"
        )
