"""qbctl db reset: empty the database, then migrate again. Containers are not touched.

`qbctl db reset` snapshots the data first (qbctl.snapshots) unless --no-snapshot; a database
that is not one of the stack's (DATABASE_URL elsewhere, no Docker engine) is reset without one,
and the result says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect, jobs, migrate
from qbctl.events import Event, Events, Status, ignore

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

EMPTY_SQL = """
DROP SCHEMA IF EXISTS qbctl CASCADE;
DROP EXTENSION IF EXISTS timescaledb CASCADE;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


@dataclass
class DbResetResult(migrate.MigrateResult):
    snapshot: str | None = None  # the automatic snapshot of the data removed
    snapshot_skipped: str | None = None  # why there is none


def reset(
    settings: Settings,
    options: migrate.MigrateOptions = migrate.MigrateOptions(),
    events: Events = ignore,
    snapshot: bool = False,
    *,
    rt: Runtime,
) -> DbResetResult:
    taken = skipped = None
    if snapshot:
        taken, skipped = _snapshot(settings, events, rt)
    with connect.connect(settings, wait=options.wait, events=events, rt=rt) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))  # not while a migrate runs
        try:
            # TimescaleDB's jobs are held first and a run under way ends, so that none is cut off by the
            # DROP (the jobs go with the extension; `db migrate` makes them anew).
            rows = connect.psycopg_rows(conn)
            held = jobs.hold(
                rows,
                said=lambda ids: events(
                    Event(
                        Status.WAITING, f"TimescaleDB job {jobs.jobs_text(ids)} is running; waiting for its run to end"
                    )
                ),
            )
            try:
                with conn.transaction():
                    conn.execute(EMPTY_SQL)
            except BaseException:
                jobs.release(rows, held, after_error=True)
                raise
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (migrate.LOCK_KEY,))
    events(Event(Status.DONE, f"emptied {settings.pg.masked()}"))
    done = migrate.migrate(settings, options, events, rt=rt)
    return DbResetResult(
        **{f: getattr(done, f) for f in done.__dataclass_fields__}, snapshot=taken, snapshot_skipped=skipped
    )


def _snapshot(settings: Settings, events: Events, rt: Runtime) -> tuple[str | None, str | None]:
    from qbctl.engine.lock import project_lock
    from qbctl.errors import Unavailable
    from qbctl.snapshots import snapshot

    if not settings.pg.is_local:
        return None, f"DATABASE_URL points to {settings.pg.host}, not a database this stack runs"
    try:
        eng = rt.engine
    except Unavailable as exc:
        return None, f"no Docker engine ({exc.message}), so no container of this stack to snapshot"
    with project_lock(settings.project, events, eng=eng, holds=rt.holds):
        done = snapshot.guard(eng, settings, "db-reset", events, rt=rt)
    return done.name, done.skipped
