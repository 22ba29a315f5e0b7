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

- **on a remote engine** (ssh://, tcp://) the copy is never built on the VM beside the live database (its
  1 GB): pg_basebackup runs by exec in the VM's postgres container and its tar stream comes through the
  engine's connection (the ssh tunnel) into the scratch container on the developer's own engine
  (QBCTL_REHEARSE_DOCKER_HOST), of the same image (by ID, else pulled by its registry digest). Nothing is
  created on the VM. `--logical` (a database of the live server) is refused there in one line.

A managed database (DATABASE_URL elsewhere) has no container to run pg_basebackup in: refused in one line.
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
from typing import TYPE_CHECKING, Any

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


def rehearse(
    settings: Settings, options: RehearseOptions = RehearseOptions(), events: Events = ignore, *, rt: Runtime
) -> RehearseResult:
    t0 = time.monotonic()
    local = files.load(settings)
    pg, stack, home = _server(settings, options, rt)
    result = RehearseResult(settings.pg.masked())
    conn = connect.connect(settings, wait=options.wait, events=events, rt=rt)
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
        copy = (
            _copy_logical(pg, settings, state.timescaledb, size, result, events, rt)
            if options.logical
            else _copy_physical(pg, stack, home, settings, size, result, events, rt)
        )
        with copy as (db, addr):
            t1 = time.monotonic()
            _apply_all(settings, db, addr, local, timescaledb, result, events, rt)
            result.apply_seconds = round(time.monotonic() - t1, 3)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


@dataclass(frozen=True)
class _Home:
    """Where the copy's container runs: its engine, the image it runs, the address its port is published on."""

    eng: Any
    image: str
    publish_ip: str
    source_host: str  # the live server's host as a person names it: "this machine", "vm"
    across: bool  # the stream crosses the connection to a remote engine (the ssh tunnel)

    def reach(self, port: int) -> tuple[str, int]:
        """The (host, port) this process connects to for the copy's published port."""
        tgt = self.eng.target
        if tgt.kind == "ssh":
            return self.eng.tunnel.forward("127.0.0.1", port)
        return (self.publish_ip, port) if tgt.kind == "tcp" else ("127.0.0.1", port)

    @property
    def engine(self) -> str:
        tgt = self.eng.target
        return f"this machine's engine ({tgt.url})" if tgt.kind == "local" else f"your engine at {tgt.url}"


def _server(settings: Settings, options: RehearseOptions, rt: Runtime):
    """The stack's postgres container, where the copy is read from; where the copy runs; one line why not."""
    from qbctl.config.urls import LOCAL_HOSTS
    from qbctl.snapshots.clients import Postgres
    from qbctl.stack.spec import build_stack

    stack = build_stack(settings)
    if "postgres" not in {s.name for s in stack.services}:
        raise Unavailable(
            f"--rehearse copies the database inside the stack's postgres container, and DATABASE_URL "
            f"points to {settings.pg.host}, a server this stack does not run: nothing was done",
            code="REHEARSAL_UNAVAILABLE",
            hint="rehearse against a restore of its dump in the local stack (pg_dump, then "
            "`qbctl db shell` / pg_restore), or run `qbctl db lint` on the files",
        )
    tgt = rt.reach.current()
    remote = tgt.remote and tgt.host not in LOCAL_HOSTS  # an engine on this machine over tcp is this machine's
    if remote and options.logical:
        raise Unavailable(
            f"--logical builds its copy as a database of the live server, and that server is on "
            f"{tgt.host}: not beside the VM's live database (its 1 GB budget): nothing was done",
            code="REHEARSAL_UNAVAILABLE",
            hint="drop --logical: the default copy is streamed through the ssh tunnel into a "
            "container of your own engine (QBCTL_REHEARSE_DOCKER_HOST)",
        )
    home = _own_engine(settings, tgt, rt) if remote else None  # before the VM is asked anything
    eng = rt.engine
    running = eng.containers(stack.project, "postgres", running_only=True)
    if not running:
        raise Unavailable(
            f"the postgres container of project {stack.project} is not running",
            code="NOT_RUNNING",
            hint="`qbctl up postgres` starts it",
        )
    pg = Postgres(eng, running[0].id, settings.pg.user)
    ref, image_id = eng.container_image(pg.cid)
    if home is None:
        home = _Home(eng, ref, "127.0.0.1", "this machine", False)
    else:
        home = _Home(home.eng, _same_image(eng, home.eng, ref, image_id), home.publish_ip, tgt.host, True)
    return pg, stack, home


SETTING = "QBCTL_REHEARSE_DOCKER_HOST"


def _own_engine(settings: Settings, tgt, rt: Runtime) -> _Home:
    """The developer's own engine (QBCTL_REHEARSE_DOCKER_HOST), where a remote project's copy runs;
    REHEARSAL_UNAVAILABLE when it is the VM's engine or does not answer."""
    import socket

    from qbctl.transport import target

    url = settings.values.qbctl_rehearse_docker_host
    own = target.parse(url, SETTING)
    if own.url == tgt.url or (own.remote and own.host == tgt.host):
        raise Unavailable(
            f"{SETTING}={url} is the engine of the live database on {tgt.host}: a rehearsal's copy is "
            "never built there, beside it (the VM's 1 GB budget): nothing was done",
            code="REHEARSAL_UNAVAILABLE",
            hint=f"set {SETTING} to your own engine (its default: unix:///var/run/docker.sock)",
        )
    try:
        eng = rt.engine_at(url, SETTING)
    except QbctlError as exc:
        raise Unavailable(
            f"the rehearsal's copy runs on your own engine, {url} ({SETTING}), which does not answer: "
            f"{exc.message}: nothing was done",
            code="REHEARSAL_UNAVAILABLE",
            hint=f"start Docker here, or set {SETTING} to an engine of yours",
        ) from None
    publish = "127.0.0.1"
    if own.kind == "tcp":  # published on the engine's own address, which is where this process reaches it
        try:
            publish = socket.gethostbyname(own.host)
        except OSError:
            publish = own.host
    return _Home(eng, "", publish, "", True)


def _same_image(source, own, ref: str, image_id: str) -> str:
    """The live server's image on the developer's engine: there by its ID, else pulled by its registry
    digest (the same bytes); IMAGE_UNAVAILABLE when neither works, REHEARSAL_UNAVAILABLE when the pulled one
    is for another architecture (a data directory is not portable across them)."""
    if own.image_info(image_id):
        return image_id
    info = source.image_info(image_id) or {}
    digests = list(info.get("RepoDigests") or [])
    reason = "it has no registry digest (built or loaded on that engine)"
    for digest in digests:
        got = own.pull_reference(digest)
        if got:
            if info.get("Architecture") and got.get("Architecture") != info.get("Architecture"):
                raise Unavailable(
                    f"{digest} pulled on {own.where} is for {got.get('Architecture')}, the live server's "
                    f"for {info.get('Architecture')}: its data directory cannot run there: nothing was "
                    "done",
                    code="REHEARSAL_UNAVAILABLE",
                    hint=f"set {SETTING} to an engine of {info.get('Architecture')}",
                )
            return str(got["Id"])
        reason = f"pulling {digest} failed: {own.last_pull_error}"
    raise Unavailable(
        f"the live server's image {ref} ({image_id[:19]}) is not on {own.where} and cannot be pulled: "
        f"{reason}: nothing was done",
        code="IMAGE_UNAVAILABLE",
        hint=f"load it there (`docker save {ref}` on the VM, `docker load` here), or set {SETTING} "
        "to an engine that has it",
    )


def scratch_name(db: str, token: str) -> str:
    suffix = PREFIX + token
    return db.encode()[: 63 - len(suffix)].decode("utf-8", "ignore") + suffix


@contextmanager
def _copy_physical(
    pg, stack, home: _Home, settings: Settings, size: int, result: RehearseResult, events: Events, rt: Runtime
):
    """The throwaway copy as a server of its own: pg_basebackup of the stack's server streamed into a
    new container of the same image (its anonymous volume, a free port, the stack's memory limit), started
    with TimescaleDB's background workers off, so no job runs on the copy. Yields (database, (host, port)).

    Where the container runs is `home`: the stack's own engine when it is this machine's; the developer's
    engine (QBCTL_REHEARSE_DOCKER_HOST) when the stack is on a VM: pg_basebackup runs by exec in the VM's
    postgres container and its tar stream comes through the ssh tunnel, so nothing is created on the VM
    and no second server runs within its 1 GB. The container is removed with its volume whatever happens
    (Ctrl-C too), and an interrupted pg_basebackup's session on the stack's server is ended by its name."""
    from qbctl.snapshots.clients import PGDATA, Postgres

    eng = home.eng
    spec = stack.get("postgres")
    app = APP + secrets.token_hex(4)
    name = f"{stack.container_name('postgres')}-rehearse"
    t0 = time.monotonic()
    moved = [0]

    def produce(sink) -> None:
        def counted(data: bytes) -> None:
            moved[0] += len(data)
            sink(data)

        pg.basebackup(counted, application_name=app)

    source = f" from {home.source_host} through the tunnel" if home.across else ""
    events(
        Event(
            Status.WORKING,
            f"copying the server{source} into container {name} on {home.engine} (pg_basebackup)",
            "postgres",
        )
    )
    cid = None
    try:
        cid = eng.run_helper(
            stack.project,
            name,
            home.image,
            "rehearse",
            environment=dict(spec.environment),
            binds={},
            command=[*spec.command, "-c", "timescaledb.max_background_workers=0"],
            mem_limit=spec.mem_limit,
            publish=5432,
            publish_ip=home.publish_ip,
            before_start=lambda c: eng.put_archive(c, PGDATA, _piped(produce)),
        )
        Postgres(eng, cid, settings.pg.user, name=f"the rehearsal's copy ({name})").wait_ready()
        port = eng.published_port(cid, 5432)
        addr = home.reach(port)
        result.copy_seconds = round(time.monotonic() - t0, 3)
        result.copy = {
            "method": "pg_basebackup into a scratch container (the same image, TimescaleDB's jobs off)"
            + (f", streamed from {home.source_host} through the engine's connection" if home.across else ""),
            "where": f"container {name} on {home.engine}, port {port}",
            "engine": eng.target.url,
            "source_host": home.source_host,
            "tunnel_bytes": moved[0] if home.across else None,
            "database": settings.pg.dbname,
            "source_bytes": size,
            "seconds": result.copy_seconds,
        }
        across = f", {moved[0] / 2**20:.0f} MB through the tunnel from {home.source_host}" if home.across else ""
        events(
            Event(Status.DONE, f"copy made in {result.copy_seconds:.1f}s ({name} on {home.engine}{across})", "postgres")
        )
        yield settings.pg.dbname, addr
    finally:
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            if cid is not None:
                eng.remove_container(cid, timeout=0)
            else:  # interrupted before run_helper returned its id: found by name and label
                eng.remove_helper(stack.project, name, "rehearse")
            _end_sessions(settings, app, rt)
            result.dropped = True
        finally:
            if main:
                signal.signal(signal.SIGINT, old)


def _end_sessions(settings: Settings, app: str, rt: Runtime) -> None:
    """Sessions of the stack's server named `app` (a copy's pg_dump or pg_basebackup cut short) ended."""
    db = settings.pg.dbname
    with connect.connect(settings, dbname="postgres" if db != "postgres" else "template1", rt=rt) as control:
        _until_none_left(control, app)  # none still reads the database when the command says so


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
def _copy_logical(
    pg,
    settings: Settings,
    timescaledb: str | None,
    size: int,
    result: RehearseResult,
    events: Events,
    rt: Runtime,
):
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
    control = connect.connect(settings, dbname=maint, rt=rt)
    try:
        result.swept = _sweep(control)
        control.execute("SELECT pg_catalog.pg_advisory_lock(%s, pg_catalog.hashtext(%s))", (LOCK_KEY, scratch))
        events(
            Event(
                Status.WORKING,
                f"copying {db} into {scratch} (pg_dump | pg_restore in the postgres container)",
                "postgres",
            )
        )
        enc, collate, ctype = control.execute(
            "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate::text, datctype::text FROM"
            " pg_catalog.pg_database WHERE datname = %s",
            (db,),
        ).fetchone()
        control.execute(
            f"CREATE DATABASE {quote(scratch)} OWNER {quote(settings.pg.user)} TEMPLATE template0 "
            f"ENCODING {literal(enc)} LC_COLLATE {literal(collate)} LC_CTYPE {literal(ctype)}".encode()
        )
        control.execute(f"COMMENT ON DATABASE {quote(scratch)} IS {literal(MARK + db)}".encode())
        restore.load_dump(pg, scratch, lambda: pg.copy_database(db, scratch, app), timescaledb, events)
        result.copy_seconds = round(time.monotonic() - t0, 3)
        result.copy = {
            "method": "pg_dump | pg_restore into a new database on the same server",
            "where": f"the postgres container of project {settings.project} on this machine's engine",
            "engine": pg.eng.target.url,
            "source_host": "this machine",
            "tunnel_bytes": None,
            "database": scratch,
            "source_bytes": size,
            "seconds": result.copy_seconds,
        }
        events(Event(Status.DONE, f"copy {scratch} made in {result.copy_seconds:.1f}s", "postgres"))
        yield scratch, None
    finally:
        _drop(settings, control, maint, scratch, app, rt)
        result.dropped = True


LOCK_KEY = 0x7162_7268  # "qbrh": pg_advisory_lock(LOCK_KEY, hashtext(copy)) while a rehearsal uses its copy
MARK = "qbctl rehearsal copy of "  # the copy's COMMENT: what the sweep looks for


def _sweep(control) -> list[str]:
    """Copies left by rehearsals that were killed: marked, and no session holds their lock. Dropped."""
    from qbctl.snapshots.inventory import quote

    left = [
        d
        for (d,) in control.execute(
            "SELECT d.datname::text FROM pg_catalog.pg_database d WHERE d.datname LIKE %s AND"
            " pg_catalog.shobj_description(d.oid, 'pg_database') LIKE %s",
            ("%" + PREFIX + "%", MARK + "%"),
        ).fetchall()
    ]
    dropped = []
    for name in left:
        ((free,),) = control.execute(
            "SELECT pg_catalog.pg_try_advisory_lock(%s, pg_catalog.hashtext(%s))", (LOCK_KEY, name)
        ).fetchall()
        if free:
            try:
                control.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)".encode())
                dropped.append(name)
            finally:
                control.execute("SELECT pg_catalog.pg_advisory_unlock(%s, pg_catalog.hashtext(%s))", (LOCK_KEY, name))
    return dropped


def _until_none_left(control, app: str, seconds: float = 5.0) -> None:
    """A pg_dump exec'd in the container just before an interrupt may connect after the first termination:
    its sessions are ended again until none is seen twice in a row (at most `seconds`)."""
    deadline, quiet = time.monotonic() + seconds, 0
    while quiet < 2 and time.monotonic() < deadline:
        ((ended,),) = control.execute(
            "SELECT count(pg_catalog.pg_terminate_backend(pid, 1000)) FROM pg_catalog.pg_stat_activity"
            " WHERE application_name = %s",
            (app,),
        ).fetchall()
        quiet = quiet + 1 if ended == 0 else 0
        if quiet < 2:
            time.sleep(0.1)


def _drop(settings: Settings, control, maint: str, scratch: str, app: str, rt: Runtime) -> None:
    """The copy dropped, and a dump still reading the real database ended. A second Ctrl-C waits for it."""
    from qbctl.snapshots.inventory import quote

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        if control.closed or control.broken or control.info.transaction_status != 0:  # 0: idle
            control.close()
            control = connect.connect(settings, dbname=maint, rt=rt)
        with control:
            control.execute(
                "SELECT count(pg_catalog.pg_terminate_backend(pid, 5000)) FROM pg_catalog.pg_stat_activity"
                " WHERE application_name = %s",
                (app,),
            )
            control.execute(f"DROP DATABASE IF EXISTS {quote(scratch)} WITH (FORCE)".encode())
            _until_none_left(control, app)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


# --- applying, watched ---------------------------------------------------------------------------------
def _apply_all(
    settings: Settings,
    db: str,
    addr: tuple[str, int] | None,
    local: list,
    timescaledb: bool,
    result: RehearseResult,
    events: Events,
    rt: Runtime,
) -> None:
    """The files on the copy, planned again from the copy's own tracking table (a migrate that ran on the
    real database since it was read is in the copy too)."""
    where = mig._Where(events, verbose=False)
    work = _connect(settings, db, addr, rt, wait=30, prepared=False)
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
            report, error = _apply(work, run, where, events, settings, (db, addr), rt)
            result.files.append(report)
            if error is not None:
                result.not_run = [r.file.label for r in runs[n + 1 :]]
                later = f"; not rehearsed after it: {', '.join(result.not_run)}" if result.not_run else ""
                result.fail(
                    RehearsalFailed(
                        f"{error.message} (on the copy; {settings.pg.dbname} was not touched)",
                        hint=f"fix the file and rehearse again{later}",
                        file=run.file.label,
                        line=error.details.get("line"),
                        sqlstate=error.details.get("sqlstate"),
                    )
                )
                return


def _connect(settings: Settings, db: str, addr: tuple[str, int] | None, rt: Runtime, **kw):
    """A session of the copy: a database of the stack's server (addr None), or the copy's own server."""
    if addr is None:
        return connect.connect(settings, dbname=db, rt=rt, **kw)
    return connect.connect(settings, dbname=db, local_port=addr[1], local_host=addr[0], rt=rt, **kw)


def _has_timescaledb(rows: Rows) -> bool:
    return rows("SELECT (pg_catalog.to_regclass('_timescaledb_catalog.chunk') IS NOT NULL)::text")[0][0] == "true"


def _snap(rows: Rows) -> watch.Snapshot:
    return watch.snapshot(rows, _has_timescaledb(rows))


def _apply(
    work, run, where, events: Events, settings: Settings, target: tuple[str, tuple[str, int] | None], rt: Runtime
) -> tuple[dict, QbctlError | None]:
    """One file on the copy, statement by statement, each watched; (its report, its error or None)."""
    import psycopg

    from qbctl.db import statements as sql

    f = run.file
    where.file, where.statement = f, None
    rows = connect.psycopg_rows(work)
    events(Event(Status.WORKING, f"rehearsing {f.label}"))
    report = {
        "file": f.label,
        "kind": f.kind,
        "action": {"reapply": "reapply", "partial": "continue"}.get(run.state, "apply"),
        "ok": True,
        "ms": 0,
        "statements": [],
        "locks": [],
        "rows": {},
        "rewritten": {},
        **{k: {} for k in EFFECTS},
    }
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
                groups.append(
                    ([st for st in f.statements[max(first, run.start) : end] if not sql.control(st)], not alone, "")
                )
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
                with _Sampler(settings, target, work.info.backend_pid, rt) as sampler:
                    t = time.monotonic()
                    work.execute(st.text.encode())  # autocommit, as migrate runs it
                    elapsed = time.monotonic() - t
                eff = watch.diff(before, _snap(rows))
                eff.rows = {}  # committed already: the transaction's counts are gone
                eff.locks = {table: mode for table, (mode, _, _) in sampler.seen.items()}
                for table, (mode, first, last) in sampler.seen.items():
                    _lock(report, table, mode, last - first + _Sampler.EVERY, st.line)
                report["statements"].append(
                    _statement(
                        st,
                        elapsed,
                        eff,
                        note=(
                            "runs outside a transaction: its locks were sampled every 20 ms from a second session "
                            "(a lock held for less may be missed), its rows are not counted"
                        ),
                    )
                )
            done += len(body)
            where.statement = None
    except psycopg.Error as exc:
        error = mig._failed(exc, run, where, done)
        st = where.statement
        report["ok"] = False
        report["error"] = {
            "message": error.message,
            "line": error.details.get("line"),
            "sqlstate": error.details.get("sqlstate"),
        }
        if st is not None:
            report["statements"].append(
                {"line": st.line, "text": _short(st.text), "ok": False, "ms": None, "error": error.message}
            )
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

    def __init__(self, settings: Settings, target: tuple[str, tuple[str, int] | None], pid: int, rt: Runtime) -> None:
        db, addr = target
        self.conn = _connect(settings, db, addr, rt)
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
    report["locks"].append(
        {
            "table": name,
            "mode": mode,
            "seconds": round(seconds, 3),
            "line": line,
            "blocks_writes": watch.RANK[mode] >= watch.BLOCKING,
            "says": watch.lock_sentence(mode, name, seconds),
        }
    )


def _statement(st, seconds: float, eff: watch.Effect, note: str = "") -> dict:
    def names(d: dict) -> dict:
        return {k.removeprefix("public."): v for k, v in d.items()}

    out = {
        "line": st.line,
        "text": _short(st.text),
        "ok": True,
        "ms": round(seconds * 1000, 1),
        "locks": names(eff.locks),
        "rows": names(eff.rows),
        **{k: names(getattr(eff, k)) for k in EFFECTS},
    }
    if note:
        out["note"] = note
    return out


def _short(text: str, width: int = 72) -> str:
    one = " ".join(line.split("--")[0] for line in text.splitlines()).split()
    flat = " ".join(one)
    return flat if len(flat) <= width else flat[: width - 3] + "..."
