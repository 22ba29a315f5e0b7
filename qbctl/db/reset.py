"""qbctl db reset: empty the database, then migrate again. Containers are not touched."""
from __future__ import annotations

from qbctl.db import migrate
from qbctl.db import connect as pg
from qbctl.config.settings import Settings

EMPTY_SQL = """
DROP SCHEMA IF EXISTS qbctl CASCADE;
DROP EXTENSION IF EXISTS timescaledb CASCADE;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


def reset(settings: Settings, without_timescaledb: bool = False, events=lambda *_: None) -> migrate.MigrateResult:
    with pg.connect(settings, wait=30) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))  # not while a migrate runs
        try:
            with conn.transaction():
                conn.execute(EMPTY_SQL)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (migrate.LOCK_KEY,))
    events("reset", f"emptied {settings.pg.masked()}")
    return migrate.migrate(settings, without_timescaledb=without_timescaledb, events=events)
