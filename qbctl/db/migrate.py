"""qbctl db migrate / status (the migration part): tracking table, plan, apply under a lock.

- a tracking table qbctl.migrations with a checksum per file (normalised: BOM, CRLF);
- each file in its own transaction together with its tracking row, one statement at a time
  (so a failing statement's line is known); a file that cannot run in a transaction (a marker,
  or a statement the server refuses in one) runs statement by statement, each recorded as it
  commits, and a failure leaves it "partial": the next run continues where it stopped;
- one session runs the files, reset between them (DISCARD ALL), so nothing a file SETs reaches
  the next; the advisory lock is held on a session of its own for the whole run, the applied
  set read after taking it, so concurrent runs apply each file exactly once and all succeed;
- an applied schema file edited afterwards is refused by name; policy files are
  re-applied when their rendered text changes (that is how a changed setting converges).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect, files
from qbctl.db.connect import Rows
from qbctl.db.files import SqlFile
from qbctl.errors import CheckFailed, MigrationFailed, QbctlError, TimescaleMissing, Unavailable
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

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
ALTER TABLE qbctl.migrations
    ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'applied',  -- applied | partial
    ADD COLUMN IF NOT EXISTS statements_done integer,  -- a file run statement by statement: how far
    ADD COLUMN IF NOT EXISTS statement_checksums text[];  -- ... and what those statements were
"""
RECORD_SQL = """
INSERT INTO qbctl.migrations (kind, name, checksum, duration_ms, timescaledb, state, statements_done,
                              statement_checksums)
VALUES (%s, %s, %s, %s, (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'), %s, %s, %s)
ON CONFLICT (kind, name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now(),
    duration_ms = EXCLUDED.duration_ms, timescaledb = EXCLUDED.timescaledb, state = EXCLUDED.state,
    statements_done = EXCLUDED.statements_done, statement_checksums = EXCLUDED.statement_checksums
"""


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    checksum: str
    state: str = "applied"  # applied | partial
    statements_done: int | None = None  # partial: how many statements committed
    statement_checksums: tuple[str, ...] = ()  # partial: those statements' checksums


@dataclass(frozen=True)
class Item:
    file: str  # sql/schema/0002_market_data.sql
    kind: str
    state: str  # applied | pending | changed | reapply | partial | skipped
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
        elif row.state == "partial":
            items.append(_partial(f, row))
        elif row.checksum == f.checksum:
            items.append(Item(f.label, f.kind, "applied"))
        elif f.kind == "policy":
            items.append(Item(f.label, f.kind, "reapply", "rendered text changed"))
        else:
            items.append(Item(f.label, f.kind, "changed", "edited after it was applied"))
    return items


def _partial(f: SqlFile, row: Applied) -> Item:
    """A file that stopped part way: it continues if the statements already committed are unchanged."""
    sts = f.statements
    done = row.statements_done or 0
    for k in range(done):
        if k >= len(sts) or k >= len(row.statement_checksums) or sts[k].checksum != row.statement_checksums[k]:
            where = f"statement {k + 1}" + (f" (line {sts[k].line})" if k < len(sts) else "")
            return Item(f.label, f.kind, "changed", f"{where} was committed and has been edited since")
    nxt = f" (line {sts[done].line})" if done < len(sts) else ""
    return Item(
        f.label,
        f.kind,
        "partial",
        f"{done} of {len(sts)} statements committed; the next migrate continues at statement {done + 1}{nxt}",
    )


@dataclass(frozen=True, kw_only=True)
class MigrateOptions:
    dry_run: bool = False
    without_timescaledb: bool = False
    accept_edited: bool = False
    wait: float = 30.0  # seconds to wait for a server that is still starting (and for the lock, plus 60)
    verbose: bool = False  # the server's NOTICEs too (its WARNINGs are always shown)


@dataclass
class MigrateResult(Result):
    database: str
    dry_run: bool
    timescaledb: str | None
    applied: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    would_apply: list[str] = field(default_factory=list)
    one_by_one: dict[str, str] = field(default_factory=dict)  # file -> why it runs statement by statement
    up_to_date: int = 0
    seconds: float = 0.0
    ok: bool = True
    error: QbctlError | None = None


# --- the database's state, read once for both clients (psycopg and qbctl.db.libpq) -------------
# Every column is text (booleans cast: 'true'/'false'), so both clients return the same rows.
STATE_SQL = (
    "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
    " (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
    " (current_setting('shared_preload_libraries') LIKE '%timescaledb%')::text,"
    " (to_regclass('qbctl.migrations') IS NOT NULL)::text, current_setting('server_version')"
)
# to_jsonb(m): the columns a tracking table made by an older qbctl lacks read as NULL.
APPLIED_SQL = (
    "SELECT kind, name, checksum, to_jsonb(m)->>'state', to_jsonb(m)->>'statements_done',"
    " (to_jsonb(m)->'statement_checksums')::text FROM qbctl.migrations m"
)


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
    out = {}
    for k, n, c, st, done, sums in rows(APPLIED_SQL):
        out[(k, n)] = Applied(
            k, n, c, st or "applied", int(done) if done else None, tuple(json.loads(sums) or ()) if sums else ()
        )
    return out


def try_lock(rows: Rows) -> bool:
    return rows(f"SELECT pg_try_advisory_lock({LOCK_KEY})::text") == [("true",)]


def unlock(rows: Rows) -> None:
    rows(f"SELECT pg_advisory_unlock({LOCK_KEY})::text")


def _require_timescaledb(settings: Settings, state: DbState, without: bool) -> None:
    if state.timescaledb or without:
        return
    if not state.available:
        why = (
            f"the server (PostgreSQL {state.server_version} at {settings.pg.masked()}) does not have the "
            "timescaledb extension"
        )
    elif not state.preloaded:
        why = (
            f"timescaledb is installed on the server (PostgreSQL {state.server_version}) but not in "
            "shared_preload_libraries"
        )
    else:
        return  # available and preloaded: sql/schema's first file creates it
    raise TimescaleMissing(
        why,
        hint="use an image that provides it (timescale/timescaledb:latest-pg15, "
        "QBCTL_POSTGRES_IMAGE), or pass --without-timescaledb to apply the plain "
        "schema and skip hypertables and policies",
    )


def _lock(rows: Rows, timeout: float, events: Events) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while not try_lock(rows):
        if not told:
            events(Event(Status.WAITING, "another qbctl db migrate holds the migration lock; waiting for it"))
            told = True
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the migration lock was held for more than {timeout:.0f}s",
                code="LOCK_TIMEOUT",
                hint="another migrate is still running (pg_locks shows it); try again later",
            )
        time.sleep(0.05)


def migrate(
    settings: Settings, options: MigrateOptions = MigrateOptions(), events: Events = ignore, *, rt: Runtime
) -> MigrateResult:
    t0 = time.monotonic()
    local = files.load(settings)
    result = _nothing_to_do(settings, local, options, rt)
    if result is None:
        result = _migrate(settings, local, options, events, rt)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _nothing_to_do(
    settings: Settings, local: list[SqlFile], options: MigrateOptions, rt: Runtime
) -> MigrateResult | None:
    """The usual run, every file applied, answered over qbctl.db.libpq without importing psycopg.

    The same state read, lock and plan as the full path; None whenever there is anything to do
    or explain (a file to apply, an edited file, no TimescaleDB, the lock held, no connection,
    no libpq here), and the full path takes over.
    """
    from qbctl.db import libpq

    conn = libpq.connect(connect.dsn(settings, rt=rt), timeout=2)  # libpq's shortest; the full path retries
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


TODO = ("pending", "reapply", "partial")


def _migrate(
    settings: Settings, local: list[SqlFile], options: MigrateOptions, events: Events, rt: Runtime
) -> MigrateResult:
    # The lock's session: state, lock, tracking table.
    conn = connect.connect(settings, wait=options.wait, events=events, rt=rt)
    rows = connect.psycopg_rows(conn)
    with conn:
        state = read_state(rows)
        _require_timescaledb(settings, state, options.without_timescaledb)
        result = MigrateResult(settings.pg.masked(), options.dry_run, state.timescaledb)
        timescaledb = not options.without_timescaledb
        if options.dry_run:
            applied = read_applied(rows, state)
            items = plan(local, applied, timescaledb)
            _refuse_changed(items, options.accept_edited)
            result.one_by_one = {r.file.label: r.stepwise for r in _prepare_all(local, items, applied) if r.stepwise}
            _summarise(result, items, would=True)
            return result
        _lock(rows, options.wait + 60, events)
        try:
            conn.execute(TRACKING_DDL)
            applied = read_applied(rows, read_state(rows))
            items = plan(local, applied, timescaledb)
            if options.accept_edited and any(i.state == "changed" for i in items):
                _accept(conn, local, items, applied)
                applied = read_applied(rows, read_state(rows))
                items = plan(local, applied, timescaledb)
            _refuse_changed(items, False)
            runs = _prepare_all(local, items, applied)  # refusals come before anything runs
            result.one_by_one = {r.file.label: r.stepwise for r in runs if r.stepwise}
            if runs:
                _run_all(settings, runs, result, options, events, rt)
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
        result.would_apply = [i.file for i in items if i.state in TODO]


def _refuse_changed(items: list[Item], accepted: bool) -> None:
    changed = [i for i in items if i.state == "changed"]
    if not changed or accepted:
        return
    names = [i.file for i in changed]
    partial = [i for i in changed if i.reason.startswith("statement ")]
    if partial:
        raise CheckFailed(
            f"{partial[0].file}: {partial[0].reason}; nothing was run",
            code="MIGRATION_CHANGED",
            hint="the file stopped part way and the statements before the failed one are in the "
            "database as they were: put them back as they were and fix only the failed one "
            "(or later ones); `qbctl db migrate --accept-edited` records the edit if it "
            "changes nothing in the database",
            files=names,
        )
    raise CheckFailed(
        f"{', '.join(names)} changed after {'it was' if len(names) == 1 else 'they were'} applied; nothing was run",
        code="MIGRATION_CHANGED",
        hint="put the applied text back (git checkout) and write the change as a new file; "
        "if the edit changes nothing in the database, `qbctl db migrate --accept-edited` "
        "records the new checksum",
        files=names,
    )


def _accept(conn, local: list[SqlFile], items: list[Item], applied: dict[tuple[str, str], Applied]) -> None:
    by_label = {f.label: f for f in local}
    for i in items:
        if i.state == "changed":
            f = by_label[i.file]
            row = applied[(f.kind, f.name)]
            sums = [st.checksum for st in f.statements[: row.statements_done or 0]] if row.state == "partial" else None
            conn.execute(
                "UPDATE qbctl.migrations SET checksum = %s, statement_checksums = %s WHERE kind = %s AND name = %s",
                (f.checksum, sums, f.kind, f.name),
            )


# --- running the files ------------------------------------------------------------------------------
@dataclass
class _Run:
    file: SqlFile
    state: str  # pending | reapply | partial
    stepwise: str | None  # why it runs statement by statement; None: one transaction
    start: int = 0  # statements committed before this run (a partial file)
    steps: list[tuple[int, int, bool]] = field(default_factory=list)  # (first, end, outside a transaction)
    modes: str = ""  # one transaction: its own BEGIN's modes (ISOLATION LEVEL ...)


def _prepare_all(local: list[SqlFile], items: list[Item], applied: dict[tuple[str, str], Applied]) -> list[_Run]:
    by_label = {f.label: f for f in local}
    runs = []
    for i in items:
        if i.state in TODO:
            f = by_label[i.file]
            runs.append(_prepare(f, i.state, applied.get((f.kind, f.name))))
    return runs


NO_TX_HINT = (
    "put `-- qbctl: no-transaction` in the file's first comment lines to run it statement by statement "
    "(a BEGIN ... COMMIT group in it then runs as one transaction)"
)


def _prepare(f: SqlFile, state: str, row: Applied | None) -> _Run:
    """How a file will run; a MigrationFailed (refused) when it cannot run safely. Nothing runs here."""
    from qbctl.db import transactions

    sts = f.statements
    try:
        how = transactions.plan(sts, f.marked_no_transaction, partial=state == "partial")
    except transactions.Refused as refused:
        st = sts[refused.index]
        fixes = refused.fixes
        hint = ("fix it: " + "; or ".join(fixes)) if fixes else "remove the statement"
        raise MigrationFailed(
            f"{f.label}:{st.line}: {refused.what}; nothing was run",
            code="MIGRATION_REFUSED",
            hint=hint,
            file=f.label,
            line=st.line,
            applied=[],
            fixes=fixes,
        ) from None
    start = (row.statements_done or 0) if state == "partial" and row else 0
    return _Run(f, state, how.stepwise, start, how.steps, how.modes)


class _Where:
    """Which file and statement the work session is running: for errors and the server's notices."""

    def __init__(self, events: Events, verbose: bool):
        self.events, self.verbose = events, verbose
        self.file: SqlFile | None = None
        self.statement = None  # statements.Statement

    def label(self) -> str:
        if self.file is None:
            return "qbctl"
        return f"{self.file.label}:{self.statement.line}" if self.statement else self.file.label

    def notice(self, diag) -> None:
        severity = (diag.severity_nonlocalized or diag.severity or "NOTICE").upper()
        text = " ".join((diag.message_primary or "").split())
        if severity == "WARNING":
            detail = f" ({diag.message_detail.strip()})" if diag.message_detail else ""
            self.events(Event(Status.WARNING, f"{self.label()}: {text}{detail}"))
        elif self.verbose:
            self.events(Event(Status.INFO, f"{self.label()}: {severity}: {text}"))


def _run_all(
    settings: Settings, runs: list[_Run], result: MigrateResult, options: MigrateOptions, events: Events, rt: Runtime
) -> None:
    """The files in order on one session of their own, reset between files (DISCARD ALL: a new
    connection per file cost 10-35 ms each, the reset 1 ms); the first failure ends the run."""
    where = _Where(events, options.verbose)
    work = connect.connect(settings, wait=options.wait, prepared=False, rt=rt)
    with work:
        work.add_notice_handler(where.notice)
        for n, run in enumerate(runs):
            if n:
                work.execute("DISCARD ALL")  # nothing a file SET reaches the next
            try:
                result.applied.append(_apply(work, run, where, events))
            except MigrationFailed as err:
                err.details["applied"] = [a["file"] for a in result.applied]
                result.fail(err)
                return


def _apply(work, run: _Run, where: _Where, events: Events) -> dict:
    import psycopg

    from qbctl.db import statements as sql

    f = run.file
    where.file, where.statement = f, None
    verb = {"reapply": "re-applying", "partial": "continuing"}.get(run.state, "applying")
    events(Event(Status.WORKING, f"{verb} {f.label}"))
    if run.stepwise:
        events(Event(Status.INFO, f"{f.label} runs statement by statement: {run.stepwise}"))
    started = time.monotonic()
    done = run.start
    try:
        if run.stepwise is None:
            first, end, _ = run.steps[0]  # the whole file, or what its own BEGIN ... COMMIT wraps
            with work.transaction():
                if run.modes:
                    where.statement = f.statements[0]
                    work.execute(f"SET TRANSACTION {run.modes}".encode())
                for st in f.statements[first:end]:
                    where.statement = st
                    work.execute(st.text.encode())  # no parameters: the simple protocol, as psql sends it
                where.statement = None
                _record(work, f, started, "applied")
        else:
            for first, end, alone in run.steps:
                if end <= run.start:
                    continue
                body = [st for st in f.statements[max(first, run.start) : end] if not sql.control(st)]
                if alone:
                    where.statement = body[0]
                    work.execute(body[0].text.encode())  # autocommit: it commits by itself
                    where.statement = None
                    _record(work, f, started, "applied" if end == len(f.statements) else "partial", end)
                else:
                    with work.transaction():
                        for st in body:
                            where.statement = st
                            work.execute(st.text.encode())
                        where.statement = None
                        _record(work, f, started, "applied" if end == len(f.statements) else "partial", end)
                done = end
            if not run.steps or done < len(f.statements):
                _record(work, f, started, "applied", len(f.statements))
    except psycopg.Error as exc:
        raise _failed(exc, run, where, done) from None
    ms = int((time.monotonic() - started) * 1000)
    out = {
        "file": f.label,
        "action": {"reapply": "reapplied", "partial": "continued"}.get(run.state, "applied"),
        "ms": ms,
    }
    if run.stepwise:
        out["statements"] = len(f.statements) - run.start
    return out


def _record(work, f: SqlFile, started: float, state: str, done: int | None = None) -> None:
    sums = [st.checksum for st in f.statements[:done]] if done is not None else None
    work.execute(RECORD_SQL, (f.kind, f.name, f.checksum, int((time.monotonic() - started) * 1000), state, done, sums))


def _failed(exc, run: _Run, where: _Where, done: int) -> QbctlError:
    """The error of a file, as psql would show it, with what was and was not committed."""
    f, st = run.file, where.statement
    killed = connect.killed_error(exc, f.label)
    if killed:
        return killed
    line, text, fields = connect.server_error(exc, st.text if st else "", st.line if st else 1)
    n = len(f.statements)
    index = next(k for k, x in enumerate(f.statements) if x is st) + 1 if st else None  # by identity: a text may repeat
    sqlstate = fields["sqlstate"]
    if run.stepwise is None:
        hint = "the file was rolled back; nothing of it was applied. Fix it and run qbctl db migrate again"
        if sqlstate in ("25001", "2D000"):  # cannot run inside a transaction block; invalid transaction termination
            from qbctl.db.transactions import wrapper_lines

            wrap = wrapper_lines(f.statements)
            if wrap:
                hint += (
                    f"; this statement cannot run inside a transaction, and the file's own BEGIN (line {wrap[0]}) "
                    f"... COMMIT (line {wrap[1]}) makes one: remove those two lines and " + NO_TX_HINT
                )
            else:
                hint += "; this statement cannot run inside qbctl's transaction: " + NO_TX_HINT
    elif done == 0:
        hint = (
            f"the file runs statement by statement and none of its {n} statements was committed. "
            "Fix it and run qbctl db migrate again"
        )
    else:
        hint = (
            f"the file runs statement by statement: statements 1-{done} of {n} are committed and recorded "
            f"(`qbctl db status` shows the file as partial), nothing after them. Fix statement "
            f"{index or done + 1} and run qbctl db migrate again: it continues at statement {done + 1}. "
            f"Leave statements 1-{done} as they are (an edit to one is refused)"
        )
    where_ = f"{f.label}:{line}" if line else f.label
    return MigrationFailed(
        f"{where_}: {text}",
        hint=hint,
        file=f.label,
        line=line,
        statement=index,
        committed_statements=done if run.stepwise else 0,
        **fields,
    )
