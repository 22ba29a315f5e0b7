"""qbctl db reset: empty the database, then migrate again. Containers are not touched."""
from __future__ import annotations

from qbctl.config.settings import Settings
from qbctl.db import connect, migrate
from qbctl.events import Event, Events, Status, ignore

EMPTY_SQL = """
DROP SCHEMA IF EXISTS qbctl CASCADE;
DROP EXTENSION IF EXISTS timescaledb CASCADE;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


def reset(settings: Settings, options: migrate.MigrateOptions = migrate.MigrateOptions(),
          events: Events = ignore) -> migrate.MigrateResult:
    with connect.connect(settings, wait=options.wait, events=events) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))  # not while a migrate runs
        try:
            with conn.transaction():
                conn.execute(EMPTY_SQL)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (migrate.LOCK_KEY,))
    events(Event(Status.DONE, f"emptied {settings.pg.masked()}"))
    return migrate.migrate(settings, options, events)
