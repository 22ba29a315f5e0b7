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

from qbctl.result import Result
from qbctl.db import connect as pg
from qbctl.db import files as sqlfiles
from qbctl.errors import CheckFailed, QbctlError, Unavailable
from qbctl.config.settings import Settings
from qbctl.db.files import SqlFile

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
    error: dict | None = None



class MigrationFailed(QbctlError):
    exit_code = 1
    code = "MIGRATION_FAILED"


class TimescaleMissing(Unavailable):
    code = "TIMESCALEDB_UNAVAILABLE"


TSDB_STATE = ("SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
              " (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
              " current_setting('shared_preload_libraries') LIKE '%timescaledb%'")


def timescaledb_state(conn) -> tuple[str | None, str | None, bool]:
    """(installed version, available version, preloaded)."""
    row = conn.execute(TSDB_STATE).fetchone()
    return row[0], row[1], bool(row[2])


def read_applied(conn) -> dict[tuple[str, str], Applied]:
    exists = conn.execute("SELECT to_regclass('qbctl.migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    rows = conn.execute("SELECT kind, name, checksum FROM qbctl.migrations").fetchall()
    return {(k, n): Applied(k, n, c) for k, n, c in rows}


def _require_timescaledb(settings: Settings, conn, without: bool) -> str | None:
    installed, available, preloaded = timescaledb_state(conn)
    if installed or without:
        return installed
    server = conn.execute("SHOW server_version").fetchone()[0]
    if not available:
        why = f"the server (PostgreSQL {server} at {settings.pg.masked()}) does not have the timescaledb extension"
    elif not preloaded:
        why = f"timescaledb is installed on the server (PostgreSQL {server}) but not in shared_preload_libraries"
    else:
        return None
    raise TimescaleMissing(why, hint="use an image that provides it (timescale/timescaledb:latest-pg15, "
                                     "QBCTL_POSTGRES_IMAGE), or pass --without-timescaledb to apply the plain "
                                     "schema and skip hypertables and policies")


def _lock(conn, timeout: float, on_wait) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        if not told:
            on_wait("another qbctl db migrate holds the migration lock; waiting for it")
            told = True
        if time.monotonic() > deadline:
            raise Unavailable(f"the migration lock was held for more than {timeout:.0f}s", code="LOCK_TIMEOUT",
                              hint="another migrate is still running (pg_locks shows it); try again later")
        time.sleep(0.05)


def migrate(settings: Settings, dry_run: bool = False, without_timescaledb: bool = False,
            accept_edited: bool = False, wait: float = 30.0, events=lambda *_: None) -> MigrateResult:
    t0 = time.monotonic()
    local = sqlfiles.load(settings)
    result = _nothing_to_do(settings, local, dry_run, without_timescaledb)
    if result is None:
        result = _migrate(settings, local, dry_run, without_timescaledb, accept_edited, wait, events)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _nothing_to_do(settings: Settings, local: list[SqlFile], dry_run: bool,
                   without_timescaledb: bool) -> MigrateResult | None:
    """The usual run, every file applied, answered over qbctl.libpq without importing psycopg.

    The same checks as the full path, under the same lock; None whenever there is anything to
    do or explain (a file to apply, an edited file, no TimescaleDB, the lock held, no connection),
    and the full path takes over.
    """
    from qbctl.db import libpq

    conn = libpq.connect(pg.dsn(settings), timeout=2)  # libpq's shortest; the full path retries
    if conn is None:
        return None
    with conn:
        state = conn.rows(TSDB_STATE + ", to_regclass('qbctl.migrations') IS NOT NULL")
        if not state:
            return None
        installed, _, _, tracked = state[0]
        if not (installed or without_timescaledb) or tracked != "t":
            return None
        if conn.rows(f"SELECT pg_try_advisory_lock({LOCK_KEY})") != [("t",)]:
            return None
        try:
            rows = conn.rows("SELECT kind, name, checksum FROM qbctl.migrations")
        finally:
            conn.rows(f"SELECT pg_advisory_unlock({LOCK_KEY})")
    if rows is None:
        return None
    items = plan(local, {(k, n): Applied(k, n, c) for k, n, c in rows}, timescaledb=not without_timescaledb)
    if any(i.state not in ("applied", "skipped") for i in items):
        return None
    result = MigrateResult(settings.pg.masked(), dry_run, installed)
    _summarise(result, items, would=dry_run)
    return result


def _migrate(settings: Settings, local: list[SqlFile], dry_run: bool, without_timescaledb: bool,
             accept_edited: bool, wait: float, events) -> MigrateResult:
    conn = pg.connect(settings, wait=wait)
    with conn:
        tsdb = _require_timescaledb(settings, conn, without_timescaledb)
        result = MigrateResult(settings.pg.masked(), dry_run, tsdb)
        if dry_run:
            items = plan(local, read_applied(conn), timescaledb=not without_timescaledb)
            _refuse_changed(items, accept_edited)
            _summarise(result, items, would=True)
            return result
        _lock(conn, wait + 60, lambda text: events("wait", text))
        try:
            conn.execute(TRACKING_DDL)
            items = plan(local, read_applied(conn), timescaledb=not without_timescaledb)
            _refuse_changed(items, accept_edited and _accept(conn, local, items))
            by_label = {f.label: f for f in local}
            for item in items:
                if item.state in ("pending", "reapply"):
                    result.applied.append(_apply(conn, by_label[item.file], item.state, events))
            result.timescaledb = timescaledb_state(conn)[0]  # a schema file may have just created it
            _summarise(result, items, would=False)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
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


def _apply(conn, f: SqlFile, state: str, events) -> dict:
    import psycopg

    events("apply", f"{'re-applying' if state == 'reapply' else 'applying'} {f.label}")
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
        line, text = pg.error_position(f.text, exc)
        where = f"{f.label}:{line}" if line else f.label
        raise MigrationFailed(f"{where}: {text}", hint="the file was rolled back; nothing of it was applied. "
                              "Fix it and run qbctl db migrate again", file=f.label, line=line,
                              sqlstate=getattr(exc.diag, "sqlstate", None)) from None
    return {"file": f.label, "action": "reapplied" if state == "reapply" else "applied", "ms": ms}
