"""qbctl db migrate --rehearse: the pending files applied to a throwaway copy of the database first.

- **what runs**: exactly what `db migrate` would run (its `plan` and `_prepare`: the same refusals, the
  same transactions), read from the real database without its migration lock (nothing is locked there);
- **the copy**: pg_dump piped into pg_restore inside the stack's postgres container, into a new database
  `<db>_qbctl_rehearse_<hex>` on the same server, TimescaleDB's way (`restore.load_dump`: pre_restore,
  restore, post_restore), its jobs paused (`scheduled = false`), so no policy changes the data under the
  files. Measured against the other ways in docs/rehearse.md: `CREATE DATABASE ... TEMPLATE` needs the
  source without sessions (TimescaleDB's scheduler is always one: timescale/timescaledb#4048, #9080), and
  a copy of the data directory is the whole cluster in a second server;
- **each statement** runs on one session of the copy, as migrate runs it, and is watched from inside
  its own transaction (`rehearse_watch`): the strongest lock per table with how long it is held (from the
  statement's start until its transaction commits), rows inserted/updated/deleted, tables and chunks
  rewritten, chunks decompressed;
- **nothing is left**: the copy is dropped (`WITH (FORCE)`) whatever happens, Ctrl-C included; an
  interrupted copy's pg_dump session on the real database is ended by its application name.

The stack's server only: on a remote engine the copy would sit beside production within its 1 GB, and a
managed database (DATABASE_URL elsewhere) has no container to run pg_dump in; both are refused in one line.
"""
from __future__ import annotations

import queue
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect, files
from qbctl.db import migrate as mig
from qbctl.db import rehearse_watch as watch
from qbctl.db.connect import Rows
from qbctl.errors import QbctlError, RehearsalFailed, Unavailable
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

PREFIX = "_qbctl_rehearse_"
# What a statement did beyond its rows, per table: relations rewritten, chunks decompressed (wholly or in
# part), compressed batches decompressed, chunks compressed.
EFFECTS = ("rewritten", "decompressed", "partly_decompressed", "batches_decompressed", "compressed")
APP = "qbctl-rehearse-"


@dataclass(frozen=True, kw_only=True)
class RehearseOptions:
    without_timescaledb: bool = False
    wait: float = 30.0
    logical: bool = False  # the copy by pg_dump | pg_restore into a new database of the same server


@dataclass
class RehearseResult(Result):
    database: str
    copy: dict = field(default_factory=dict)  # method, where, database, seconds, bytes
    files: list[dict] = field(default_factory=list)  # one per file rehearsed, in order
    not_run: list[str] = field(default_factory=list)  # files after a failed one
    skipped: list[dict] = field(default_factory=list)
    up_to_date: int = 0
    copy_seconds: float = 0.0
    apply_seconds: float = 0.0
    seconds: float = 0.0
    dropped: bool = False  # the copy is gone
    swept: list[str] = field(default_factory=list)  # copies left by killed rehearsals, dropped first
    ok: bool = True
    error: QbctlError | None = None


def rehearse(settings: Settings, options: RehearseOptions = RehearseOptions(),
             events: Events = ignore, *, rt: Runtime) -> RehearseResult:
    t0 = time.monotonic()
    local = files.load(settings)
    pg, stack = _server(settings, rt)
    result = RehearseResult(settings.pg.masked())
    conn = connect.connect(settings, wait=options.wait, events=events)
    with conn:
        rows = connect.psycopg_rows(conn)
        state = mig.read_state(rows)
        mig._require_timescaledb(settings, state, options.without_timescaledb)
        applied = mig.read_applied(rows, state)
        size = int(rows("SELECT pg_catalog.pg_database_size(pg_catalog.current_database())::text")[0][0])
    timescaledb = not options.without_timescaledb
    items = mig.plan(local, applied, timescaledb)
    mig._refuse_changed(items, False)
    runs = mig._prepare_all(local, items, applied)  # migrate's refusals, before any copy is made
    result.skipped = [{"file": i.file, "reason": i.reason} for i in items if i.state == "skipped"]
    result.up_to_date = sum(i.state == "applied" for i in items)
    if runs:
        copy = _copy_logical(pg, settings, state.timescaledb, size, result, events) if options.logical else \
            _copy_physical(pg, stack, settings, size, result, events)
        with copy as (db, port):
            t1 = time.monotonic()
            _apply_all(settings, db, port, local, timescaledb, result, events)
            result.apply_seconds = round(time.monotonic() - t1, 3)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _server(settings: Settings, rt: Runtime):
    """The stack's postgres container, where the copy is made; one line why not elsewhere."""
    from qbctl.config.urls import LOCAL_HOSTS
    from qbctl.snapshots.clients import Postgres
    from qbctl.stack.spec import build_stack
    from qbctl.transport import target

    stack = build_stack(settings)
    if "postgres" not in {s.name for s in stack.services}:
        raise Unavailable(f"--rehearse copies the database inside the stack's postgres container, and DATABASE_URL "
                          f"points to {settings.pg.host}, a server this stack does not run: nothing was done",
                          code="REHEARSAL_UNAVAILABLE",
                          hint="rehearse against a restore of its dump in the local stack (pg_dump, then "
                               "`qbctl db shell` / pg_restore), or run `qbctl db lint` on the files")
    tgt = target.resolve()
    if tgt.remote and tgt.host not in LOCAL_HOSTS:  # an engine on this machine over tcp is this machine's
        raise Unavailable(f"the engine is on {tgt.host} ({tgt.kind}): a rehearsal's copy is not built there beside "
                          "the live database (the VM's 1 GB budget), and copying it to this machine's engine is not "
                          "supported yet: nothing was done", code="REHEARSAL_UNAVAILABLE",
                          hint="restore a snapshot of it into a local stack (`qbctl snapshot` there, then "
                               "`qbctl restore` here) and rehearse there; `qbctl db lint` works against the VM")
    eng = rt.engine
    running = eng.containers(stack.project, "postgres", running_only=True)
    if not running:
        raise Unavailable(f"the postgres container of project {stack.project} is not running", code="NOT_RUNNING",
                          hint="`qbctl up postgres` starts it")
    return Postgres(eng, running[0].id, settings.pg.user), stack


def scratch_name(db: str, token: str) -> str:
    suffix = PREFIX + token
    return db.encode()[:63 - len(suffix)].decode("utf-8", "ignore") + suffix


@contextmanager
def _copy_physical(pg, stack, settings: Settings, size: int, result: RehearseResult, events: Events):
    """The throwaway copy as a server of its own: pg_basebackup of the stack's server streamed into a
    new container of the same image (its anonymous volume, a free port of 127.0.0.1, the stack's memory
    limit), started with TimescaleDB's background workers off, so no job runs on the copy. Yields
    (database, port); the container is removed with its volume whatever happens (Ctrl-C too), and an
    interrupted pg_basebackup's session on the stack's server is ended by its name."""
    from qbctl.snapshots.clients import PGDATA, Postgres

    eng = pg.eng
    spec = stack.get("postgres")
    image, _ = eng.container_image(pg.cid)
    app = APP + secrets.token_hex(4)
    name = f"{stack.container_name('postgres')}-rehearse"
    t0 = time.monotonic()
    events(Event(Status.WORKING, f"copying the server into container {name} (pg_basebackup)", "postgres"))
    cid = None
    try:
        cid = eng.run_helper(stack.project, name, image, "rehearse", environment=dict(spec.environment), binds={},
                             command=[*spec.command, "-c", "timescaledb.max_background_workers=0"],
                             mem_limit=spec.mem_limit, publish=5432,
                             before_start=lambda c: eng.put_archive(c, PGDATA, _piped(
                                 lambda sink: pg.basebackup(sink, application_name=app))))
        Postgres(eng, cid, settings.pg.user, name=f"the rehearsal's copy ({name})").wait_ready()
        port = eng.published_port(cid, 5432)
        result.copy_seconds = round(time.monotonic() - t0, 3)
        result.copy = {"method": "pg_basebackup into a scratch container (the same image, TimescaleDB's jobs off)",
                       "where": f"container {name} on this machine's engine, port {port}",
                       "database": settings.pg.dbname, "source_bytes": size, "seconds": result.copy_seconds}
        events(Event(Status.DONE, f"copy made in {result.copy_seconds:.1f}s ({name})", "postgres"))
        yield settings.pg.dbname, port
    finally:
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            if cid is not None:
                eng.remove_container(cid, timeout=0)
            else:  # interrupted before run_helper returned its id: found by name and label
                eng.remove_helper(stack.project, name, "rehearse")
            _end_sessions(settings, app)
            result.dropped = True
        finally:
            if main:
                signal.signal(signal.SIGINT, old)


def _end_sessions(settings: Settings, app: str) -> None:
    """Sessions of the stack's server named `app` (a copy's pg_dump or pg_basebackup cut short) ended."""
    db = settings.pg.dbname
    with connect.connect(settings, dbname="postgres" if db != "postgres" else "template1") as control:
        control.execute("SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity"
                        " WHERE application_name = %s", (app,))


def _piped(produce) -> Iterator[bytes]:
    """The bytes `produce(sink)` writes, as an iterator (a thread and a short queue): a stream out of one
    container into another without a file between them."""
    chunks: queue.Queue = queue.Queue(maxsize=32)
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        def sink(data: bytes) -> None:
            while not stop.is_set():
                try:
                    chunks.put(data, timeout=0.2)
                    return
                except queue.Full:
                    continue
            raise InterruptedError("the reader stopped")
        try:
            produce(sink)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            failed.append(exc)
        finally:
            while not stop.is_set():
                try:
                    chunks.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue

    threading.Thread(target=run, daemon=True, name="qbctl-rehearse-copy").start()
    try:
        while True:
            data = chunks.get()
            if data is None:
                break
            yield data
        if failed:
            raise failed[0]
    finally:
        stop.set()


@contextmanager
def _copy_logical(pg, settings: Settings, timescaledb: str | None, size: int, result: RehearseResult,
                  events: Events):
    """The throwaway copy as a database of the stack's server (`--logical`): made, handed to the body as
    (database, None), dropped whatever happens (Ctrl-C too).

    CREATE and DROP DATABASE go over psycopg to the maintenance database (a Ctrl-C cancels a query under
    way on the server, where a `psql` run in the container would go on without us). That session holds
    an advisory lock named after the copy for as long as the rehearsal lives, so a copy left by a
    rehearsal that was killed (SIGKILL, a lost machine) is told from one in use and dropped by the next."""
    from qbctl.snapshots.inventory import literal, quote
    from qbctl.workflows import restore

    db = settings.pg.dbname
    token = secrets.token_hex(4)
    scratch, app = scratch_name(db, token), APP + token
    maint = "postgres" if db != "postgres" else "template1"
    t0 = time.monotonic()
    control = connect.connect(settings, dbname=maint)
    try:
        result.swept = _sweep(control)
        control.execute("SELECT pg_catalog.pg_advisory_lock(%s, pg_catalog.hashtext(%s))", (LOCK_KEY, scratch))
        events(Event(Status.WORKING, f"copying {db} into {scratch} (pg_dump | pg_restore in the postgres "
                                     "container)", "postgres"))
        enc, collate, ctype = control.execute(
            "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate::text, datctype::text FROM"
            " pg_catalog.pg_database WHERE datname = %s", (db,)).fetchone()
        control.execute(f"CREATE DATABASE {quote(scratch)} OWNER {quote(settings.pg.user)} TEMPLATE template0 "
                        f"ENCODING {literal(enc)} LC_COLLATE {literal(collate)} LC_CTYPE {literal(ctype)}".encode())
        control.execute(f"COMMENT ON DATABASE {quote(scratch)} IS {literal(MARK + db)}".encode())
        restore.load_dump(pg, scratch, lambda: pg.copy_database(db, scratch, app), timescaledb, events)
        result.copy_seconds = round(time.monotonic() - t0, 3)
        result.copy = {"method": "pg_dump | pg_restore into a new database on the same server",
                       "where": f"the postgres container of project {settings.project} on this machine's engine",
                       "database": scratch, "source_bytes": size, "seconds": result.copy_seconds}
        events(Event(Status.DONE, f"copy {scratch} made in {result.copy_seconds:.1f}s", "postgres"))
        yield scratch, None
    finally:
        _drop(settings, control, maint, scratch, app)
        result.dropped = True


LOCK_KEY = 0x7162_7268  # "qbrh": pg_advisory_lock(LOCK_KEY, hashtext(copy)) while a rehearsal uses its copy
MARK = "qbctl rehearsal copy of "  # the copy's COMMENT: what the sweep looks for


def _sweep(control) -> list[str]:
    """Copies left by rehearsals that were killed: marked, and no session holds their lock. Dropped."""
    from qbctl.snapshots.inventory import quote

    left = [d for (d,) in control.execute(
        "SELECT d.datname::text FROM pg_catalog.pg_database d WHERE d.datname LIKE %s AND"
        " pg_catalog.shobj_description(d.oid, 'pg_database') LIKE %s", ("%" + PREFIX + "%", MARK + "%")).fetchall()]
    dropped = []
    for name in left:
        (free,), = control.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, pg_catalog.hashtext(%s))",
                                   (LOCK_KEY, name)).fetchall()
        if free:
            try:
                control.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)".encode())
                dropped.append(name)
            finally:
                control.execute("SELECT pg_catalog.pg_advisory_unlock(%s, pg_catalog.hashtext(%s))", (LOCK_KEY, name))
    return dropped


def _drop(settings: Settings, control, maint: str, scratch: str, app: str) -> None:
    """The copy dropped, and a dump still reading the real database ended. A second Ctrl-C waits for it."""
    from qbctl.snapshots.inventory import quote

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        if control.closed or control.broken or control.info.transaction_status != 0:  # 0: idle
            control.close()
            control = connect.connect(settings, dbname=maint)
        with control:
            control.execute("SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity"
                            " WHERE application_name = %s", (app,))
            control.execute(f"DROP DATABASE IF EXISTS {quote(scratch)} WITH (FORCE)".encode())
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


# --- applying, watched ---------------------------------------------------------------------------------
def _apply_all(settings: Settings, db: str, port: int | None, local: list, timescaledb: bool,
               result: RehearseResult, events: Events) -> None:
    """The files on the copy, planned again from the copy's own tracking table (a migrate that ran on the
    real database since it was read is in the copy too)."""
    where = mig._Where(events, verbose=False)
    work = connect.connect(settings, wait=30, prepared=False, dbname=db, local_port=port)
    with work:
        rows = connect.psycopg_rows(work)
        applied = mig.read_applied(rows, mig.read_state(rows))
        items = mig.plan(local, applied, timescaledb)
        mig._refuse_changed(items, False)
        runs = mig._prepare_all(local, items, applied)
        result.skipped = [{"file": i.file, "reason": i.reason} for i in items if i.state == "skipped"]
        result.up_to_date = sum(i.state == "applied" for i in items)
        work.add_notice_handler(where.notice)
        for n, run in enumerate(runs):
            if n:
                work.execute("DISCARD ALL")
            report, error = _apply(work, run, where, events, settings, (db, port))
            result.files.append(report)
            if error is not None:
                result.not_run = [r.file.label for r in runs[n + 1:]]
                later = f"; not rehearsed after it: {', '.join(result.not_run)}" if result.not_run else ""
                result.fail(RehearsalFailed(
                    f"{error.message} (on the copy; {settings.pg.dbname} was not touched)",
                    hint=f"fix the file and rehearse again{later}", file=run.file.label,
                    line=error.details.get("line"), sqlstate=error.details.get("sqlstate")))
                return


def _has_timescaledb(rows: Rows) -> bool:
    return rows("SELECT (pg_catalog.to_regclass('_timescaledb_catalog.chunk') IS NOT NULL)::text")[0][0] == "true"


def _snap(rows: Rows) -> watch.Snapshot:
    return watch.snapshot(rows, _has_timescaledb(rows))


def _apply(work, run, where, events: Events, settings: Settings,
           target: tuple[str, int | None]) -> tuple[dict, QbctlError | None]:
    """One file on the copy, statement by statement, each watched; (its report, its error or None)."""
    import psycopg

    from qbctl.db import statements as sql

    f = run.file
    where.file, where.statement = f, None
    rows = connect.psycopg_rows(work)
    events(Event(Status.WORKING, f"rehearsing {f.label}"))
    report = {"file": f.label, "kind": f.kind, "action": {"reapply": "reapply", "partial": "continue"}.get(
        run.state, "apply"), "ok": True, "ms": 0, "statements": [], "locks": [], "rows": {}, "rewritten": {},
        **{k: {} for k in EFFECTS}}
    if run.stepwise:
        report["one_by_one"] = run.stepwise
    started = time.monotonic()
    groups = []  # (statements, in a transaction, SET TRANSACTION modes)
    if run.stepwise is None:
        first, end, _ = run.steps[0]
        groups.append((f.statements[first:end], True, run.modes))
    else:
        for first, end, alone in run.steps:
            if end > run.start:
                groups.append(([st for st in f.statements[max(first, run.start):end] if not sql.control(st)],
                               not alone, ""))
    done = run.start
    error = None
    try:
        for body, in_tx, modes in groups:
            if in_tx:
                with work.transaction():
                    if modes:
                        work.execute(f"SET TRANSACTION {modes}".encode())
                    taken = _run_group(work, rows, body, where, report)
                    end = time.monotonic()  # the commit follows at once
                for table, (mode, since, line) in taken.items():
                    _lock(report, table, mode, end - since, line)
            else:
                st = body[0]
                where.statement = st
                before = _snap(rows)
                with _Sampler(settings, target, work.info.backend_pid) as sampler:
                    t = time.monotonic()
                    work.execute(st.text.encode())  # autocommit, as migrate runs it
                    elapsed = time.monotonic() - t
                eff = watch.diff(before, _snap(rows))
                eff.rows = {}  # committed already: the transaction's counts are gone
                eff.locks = {table: mode for table, (mode, _, _) in sampler.seen.items()}
                for table, (mode, first, last) in sampler.seen.items():
                    _lock(report, table, mode, last - first + _Sampler.EVERY, st.line)
                report["statements"].append(_statement(st, elapsed, eff, note=(
                    "runs outside a transaction: its locks were sampled every 20 ms from a second session "
                    "(a lock held for less may be missed), its rows are not counted")))
            done += len(body)
            where.statement = None
    except psycopg.Error as exc:
        error = mig._failed(exc, run, where, done)
        st = where.statement
        report["ok"] = False
        report["error"] = {"message": error.message, "line": error.details.get("line"),
                           "sqlstate": error.details.get("sqlstate")}
        if st is not None:
            report["statements"].append({"line": st.line, "text": _short(st.text), "ok": False,
                                         "ms": None, "error": error.message})
    report["ms"] = int((time.monotonic() - started) * 1000)
    for s in report["statements"]:
        for key in ("rows", *EFFECTS):
            for table, v in (s.get(key) or {}).items():
                if isinstance(v, dict):
                    t = report["rows"].setdefault(table, {"inserted": 0, "updated": 0, "deleted": 0})
                    for k in t:
                        t[k] += v[k]
                else:
                    report[key][table] = report[key].get(table, 0) + v
    report["locks"].sort(key=lambda x: (-watch.RANK[x["mode"]], -x["seconds"]))
    return report, error


class _Sampler:
    """The locks of a statement that runs outside a transaction (they are gone when it returns), sampled
    from a second session of the copy while it runs: per table the strongest mode seen, first and last seen."""

    EVERY = 0.02

    def __init__(self, settings: Settings, target: tuple[str, int | None], pid: int) -> None:
        db, port = target
        self.conn = connect.connect(settings, dbname=db, local_port=port)
        self.rows = connect.psycopg_rows(self.conn)
        self.pid = pid
        self.ts = _has_timescaledb(self.rows)
        self.base = watch.snapshot(self.rows, self.ts, pid)  # what exists: a relation it makes is no one's yet
        self.seen: dict[str, tuple[str, float, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="qbctl-rehearse-locks")

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                snap = watch.snapshot(self.rows, self.ts, self.pid)
            except Exception:  # noqa: BLE001 - the copy went away (Ctrl-C): the statement's error says it
                return
            now = time.monotonic()
            for table, mode in watch.strongest(snap, self.base).items():
                was = self.seen.get(table)
                if was is None or watch.RANK[mode] > watch.RANK[was[0]]:
                    self.seen[table] = (mode, now, now)
                elif mode == was[0]:
                    self.seen[table] = (mode, was[1], now)
            self.stop.wait(self.EVERY)

    def __enter__(self) -> _Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.conn.close()


def _run_group(work, rows: Rows, body: list, where, report: dict) -> dict[str, tuple[str, float, int]]:
    """Statements of one transaction; per table the strongest lock it took: (mode, taken at, line)."""
    taken: dict[str, tuple[str, float, int]] = {}
    before = existing = _snap(rows)
    for st in body:
        where.statement = st
        t = time.monotonic()
        work.execute(st.text.encode())  # no parameters: the simple protocol, as psql sends it
        elapsed = time.monotonic() - t
        after = _snap(rows)
        eff = watch.diff(before, after, existing)
        for table, mode in eff.locks.items():
            taken[table] = (mode, t, st.line)
        report["statements"].append(_statement(st, elapsed, eff))
        before = after
    return taken


def _lock(report: dict, table: str, mode: str, seconds: float, line: int) -> None:
    name = table.removeprefix("public.")
    report["locks"].append({"table": name, "mode": mode, "seconds": round(seconds, 3), "line": line,
                            "blocks_writes": watch.RANK[mode] >= watch.BLOCKING,
                            "says": watch.lock_sentence(mode, name, seconds)})


def _statement(st, seconds: float, eff: watch.Effect, note: str = "") -> dict:
    def names(d: dict) -> dict:
        return {k.removeprefix("public."): v for k, v in d.items()}

    out = {"line": st.line, "text": _short(st.text), "ok": True, "ms": round(seconds * 1000, 1),
           "locks": names(eff.locks), "rows": names(eff.rows), **{k: names(getattr(eff, k)) for k in EFFECTS}}
    if note:
        out["note"] = note
    return out


def _short(text: str, width: int = 72) -> str:
    one = " ".join(line.split("--")[0] for line in text.splitlines()).split()
    flat = " ".join(one)
    return flat if len(flat) <= width else flat[:width - 3] + "..."
