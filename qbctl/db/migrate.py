"""qbctl db migrate / status (the migration part): tracking table, plan, apply under a lock.

- a tracking table qbctl.migrations with a checksum per file (normalised: BOM, CRLF);
- each file in its own transaction together with its tracking row;
- a session-level advisory lock for the whole run, the applied set read after taking it,
  so concurrent runs apply each file exactly once and all succeed;
- an applied schema file edited afterwards is refused by name; policy files are
  re-applied when their rendered text changes (that is how a changed setting converges).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.db import connect, files
from qbctl.db.connect import Rows
from qbctl.db.files import SqlFile
from qbctl.errors import CheckFailed, MigrationFailed, QbctlError, TimescaleMissing, Unavailable
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result

LOCK_KEY = 0x71_62_63_74_6C  # "qbctl": one advisory lock per database
TRACKING_DDL = """
CREATE SCHEMA IF NOT EXISTS qbctl;
CREATE TABLE IF NOT EXISTS qbctl.migrations (
    kind          text        NOT NULL,
    name          text        NOT NULL,
    checksum      text        NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    duration_ms   integer     NOT NULL,
    timescaledb   text,
    PRIMARY KEY (kind, name)
);
"""


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    checksum: str


@dataclass(frozen=True)
class Item:
    file: str  # sql/schema/0002_market_data.sql
    kind: str
    state: str  # applied | pending | changed | reapply | skipped
    reason: str = ""


def plan(local: list[SqlFile], applied: dict[tuple[str, str], Applied], timescaledb: bool) -> list[Item]:
    """What a migrate would do. Pure: local files against the tracking rows."""
    items = []
    for f in local:
        row = applied.get((f.kind, f.name))
        if f.needs_timescaledb and not timescaledb and row is None:
            items.append(Item(f.label, f.kind, "skipped", "needs TimescaleDB"))
        elif row is None:
            items.append(Item(f.label, f.kind, "pending"))
        elif row.checksum == f.checksum:
            items.append(Item(f.label, f.kind, "applied"))
        elif f.kind == "policy":
            items.append(Item(f.label, f.kind, "reapply", "rendered text changed"))
        else:
            items.append(Item(f.label, f.kind, "changed", "edited after it was applied"))
    return items


@dataclass(frozen=True, kw_only=True)
class MigrateOptions:
    dry_run: bool = False
    without_timescaledb: bool = False
    accept_edited: bool = False
    wait: float = 30.0  # seconds to wait for a server that is still starting (and for the lock, plus 60)


@dataclass
class MigrateResult(Result):
    database: str
    dry_run: bool
    timescaledb: str | None
    applied: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    would_apply: list[str] = field(default_factory=list)
    up_to_date: int = 0
    seconds: float = 0.0
    ok: bool = True
    error: QbctlError | None = None


# --- the database's state, read once for both clients (psycopg and qbctl.db.libpq) -------------
# Every column is text (booleans cast: 'true'/'false'), so both clients return the same rows.
STATE_SQL = ("SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
             " (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
             " (current_setting('shared_preload_libraries') LIKE '%timescaledb%')::text,"
             " (to_regclass('qbctl.migrations') IS NOT NULL)::text, current_setting('server_version')")
APPLIED_SQL = "SELECT kind, name, checksum FROM qbctl.migrations"


@dataclass(frozen=True)
class DbState:
    timescaledb: str | None  # installed version
    available: str | None  # version the server could install
    preloaded: bool
    tracked: bool  # qbctl.migrations exists
    server_version: str


def read_state(rows: Rows) -> DbState:
    installed, available, preloaded, tracked, version = rows(STATE_SQL)[0]
    return DbState(installed, available, preloaded == "true", tracked == "true", version)


def read_applied(rows: Rows, state: DbState) -> dict[tuple[str, str], Applied]:
    if not state.tracked:
        return {}
    return {(k, n): Applied(k, n, c) for k, n, c in rows(APPLIED_SQL)}


def try_lock(rows: Rows) -> bool:
    return rows(f"SELECT pg_try_advisory_lock({LOCK_KEY})::text") == [("true",)]


def unlock(rows: Rows) -> None:
    rows(f"SELECT pg_advisory_unlock({LOCK_KEY})::text")


def _require_timescaledb(settings: Settings, state: DbState, without: bool) -> None:
    if state.timescaledb or without:
        return
    if not state.available:
        why = (f"the server (PostgreSQL {state.server_version} at {settings.pg.masked()}) does not have the "
               "timescaledb extension")
    elif not state.preloaded:
        why = (f"timescaledb is installed on the server (PostgreSQL {state.server_version}) but not in "
               "shared_preload_libraries")
    else:
        return  # available and preloaded: sql/schema's first file creates it
    raise TimescaleMissing(why, hint="use an image that provides it (timescale/timescaledb:latest-pg15, "
                                     "QBCTL_POSTGRES_IMAGE), or pass --without-timescaledb to apply the plain "
                                     "schema and skip hypertables and policies")


def _lock(rows: Rows, timeout: float, events: Events) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while not try_lock(rows):
        if not told:
            events(Event(Status.WAITING, "another qbctl db migrate holds the migration lock; waiting for it"))
            told = True
        if time.monotonic() > deadline:
            raise Unavailable(f"the migration lock was held for more than {timeout:.0f}s", code="LOCK_TIMEOUT",
                              hint="another migrate is still running (pg_locks shows it); try again later")
        time.sleep(0.05)


def migrate(settings: Settings, options: MigrateOptions = MigrateOptions(), events: Events = ignore) -> MigrateResult:
    t0 = time.monotonic()
    local = files.load(settings)
    result = _nothing_to_do(settings, local, options)
    if result is None:
        result = _migrate(settings, local, options, events)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _nothing_to_do(settings: Settings, local: list[SqlFile], options: MigrateOptions) -> MigrateResult | None:
    """The usual run, every file applied, answered over qbctl.db.libpq without importing psycopg.

    The same state read, lock and plan as the full path; None whenever there is anything to do
    or explain (a file to apply, an edited file, no TimescaleDB, the lock held, no connection,
    no libpq here), and the full path takes over.
    """
    from qbctl.db import libpq

    conn = libpq.connect(connect.dsn(settings), timeout=2)  # libpq's shortest; the full path retries
    if conn is None:
        return None
    with conn:
        try:
            state = read_state(conn.rows)
            if not (state.timescaledb or options.without_timescaledb) or not state.tracked or not try_lock(conn.rows):
                return None
            try:
                applied = read_applied(conn.rows, state)
            finally:
                unlock(conn.rows)
        except libpq.Failed:
            return None
    items = plan(local, applied, timescaledb=not options.without_timescaledb)
    if any(i.state not in ("applied", "skipped") for i in items):
        return None
    result = MigrateResult(settings.pg.masked(), options.dry_run, state.timescaledb)
    _summarise(result, items, would=options.dry_run)
    return result


def _migrate(settings: Settings, local: list[SqlFile], options: MigrateOptions, events: Events) -> MigrateResult:
    conn = connect.connect(settings, wait=options.wait, events=events)
    rows = connect.psycopg_rows(conn)
    with conn:
        state = read_state(rows)
        _require_timescaledb(settings, state, options.without_timescaledb)
        result = MigrateResult(settings.pg.masked(), options.dry_run, state.timescaledb)
        timescaledb = not options.without_timescaledb
        if options.dry_run:
            items = plan(local, read_applied(rows, state), timescaledb)
            _refuse_changed(items, options.accept_edited)
            _summarise(result, items, would=True)
            return result
        _lock(rows, options.wait + 60, events)
        try:
            conn.execute(TRACKING_DDL)
            items = plan(local, read_applied(rows, read_state(rows)), timescaledb)
            _refuse_changed(items, options.accept_edited and _accept(conn, local, items))
            by_label = {f.label: f for f in local}
            for item in items:
                if item.state in ("pending", "reapply"):
                    result.applied.append(_apply(conn, by_label[item.file], item.state, events))
            result.timescaledb = read_state(rows).timescaledb  # a schema file may have just created it
            _summarise(result, items, would=False)
        finally:
            if not conn.broken:  # a killed backend took its lock with it; its error is the one to report
                unlock(rows)
    return result


def _summarise(result: MigrateResult, items: list[Item], would: bool) -> None:
    result.skipped = [{"file": i.file, "reason": i.reason} for i in items if i.state == "skipped"]
    result.up_to_date = sum(i.state == "applied" for i in items)
    if would:
        result.would_apply = [i.file for i in items if i.state in ("pending", "reapply")]


def _refuse_changed(items: list[Item], accepted: bool) -> None:
    changed = [i.file for i in items if i.state == "changed"]
    if changed and not accepted:
        raise CheckFailed(f"{', '.join(changed)} changed after {'it was' if len(changed) == 1 else 'they were'} "
                          "applied; nothing was run", code="MIGRATION_CHANGED",
                          hint="put the applied text back (git checkout) and write the change as a new file; "
                               "if the edit changes nothing in the database, `qbctl db migrate --accept-edited` "
                               "records the new checksum", files=changed)


def _accept(conn, local: list[SqlFile], items: list[Item]) -> bool:
    by_label = {f.label: f for f in local}
    for i in items:
        if i.state == "changed":
            f = by_label[i.file]
            conn.execute("UPDATE qbctl.migrations SET checksum = %s WHERE kind = %s AND name = %s",
                         (f.checksum, f.kind, f.name))
    return True


def _apply(conn, f: SqlFile, state: str, events: Events) -> dict:
    import psycopg

    events(Event(Status.WORKING, f"{'re-applying' if state == 'reapply' else 'applying'} {f.label}"))
    started = time.monotonic()
    try:
        with conn.transaction():
            conn.execute(f.text.encode())  # no parameters: one simple query, many statements
            ms = int((time.monotonic() - started) * 1000)
            conn.execute(
                "INSERT INTO qbctl.migrations (kind, name, checksum, duration_ms, timescaledb)"
                " VALUES (%s, %s, %s, %s, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'))"
                " ON CONFLICT (kind, name) DO UPDATE SET checksum = EXCLUDED.checksum,"
                " applied_at = now(), duration_ms = EXCLUDED.duration_ms, timescaledb = EXCLUDED.timescaledb",
                (f.kind, f.name, f.checksum, ms))
    except psycopg.Error as exc:
        killed = connect.killed_error(exc, f"{f.label}")
        if killed:
            raise killed from None
        line, text = connect.error_position(f.text, exc)
        where = f"{f.label}:{line}" if line else f.label
        raise MigrationFailed(f"{where}: {text}", hint="the file was rolled back; nothing of it was applied. "
                              "Fix it and run qbctl db migrate again", file=f.label, line=line,
                              sqlstate=getattr(exc.diag, "sqlstate", None)) from None
    return {"file": f.label, "action": "reapplied" if state == "reapply" else "applied", "ms": ms}
