"""qbctl snapshot [NAME], and the automatic snapshot a destructive command takes first.

PostgreSQL: pg_dump (custom format) runs inside the postgres container and streams to the
project folder; the inventory (rows and a checksum per table, hypertables, jobs, migrations) is
read in the very transaction snapshot pg_dump uses (pg_export_snapshot), so the two agree even
while the backend writes. The dump is read back by pg_restore --list before the snapshot counts.
Redis: its RDB file, written by BGSAVE (a consistent fork of the dataset) and copied out.
A stack whose containers are stopped (after `down`) but whose volumes hold data is dumped
through a temporary container on the volume: nothing is lost because nothing was running.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qbctl import __version__
from qbctl.config.settings import Settings
from qbctl.db import connect
from qbctl.engine import facade as engine
from qbctl.engine.labels import LABEL_PG_MAJOR
from qbctl.engine.lock import project_lock
from qbctl.engine.runtime import Runtime
from qbctl.errors import CheckFailed, QbctlError, Unavailable, UsageError
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result
from qbctl.snapshots import inventory, rdb, store
from qbctl.snapshots.clients import Postgres, Redis
from qbctl.stack import volumes
from qbctl.stack.spec import ServiceSpec, Stack, build_stack

DUMP_SHARE = 2  # a custom-format dump is rarely over half the database's size (indexes are not dumped)


@dataclass(frozen=True, kw_only=True)
class SnapshotOptions:
    name: str | None = None  # None: the time
    before: str | None = None  # automatic, before this command (reset, db-reset, restore, upgrade)
    physical: bool = True  # also the data directory (named snapshots; never automatic ones)


@dataclass
class SnapshotResult(Result):
    name: str | None
    path: str | None = None
    automatic: bool = False
    postgres: dict | None = None  # version, timescaledb, database, tables, rows
    redis: dict | None = None  # version, keys
    bytes: int = 0
    seconds: float = 0.0
    skipped: str | None = None  # why an automatic snapshot was not taken
    pruned: list[str] = field(default_factory=list)
    restore_command: str | None = None
    forms: list[str] = field(default_factory=list)  # logical (the dump), physical (the data directory)
    notes: list[str] = field(default_factory=list)
    ok: bool = True
    error: QbctlError | None = None


def take(
    settings: Settings, options: SnapshotOptions = SnapshotOptions(), events: Events = ignore, *, rt: Runtime
) -> SnapshotResult:
    if options.name is not None:  # a bad or taken name is said before anything else is asked
        store.refuse_taken(settings, store.check_name(options.name))
    eng = rt.engine
    with project_lock(settings.project, events, eng=eng, holds=rt.holds):
        return take_with(eng, settings, options, events, rt=rt)


def take_with(
    eng: engine.Engine,
    settings: Settings,
    options: SnapshotOptions,
    events: Events,
    prune: bool = True,
    *,
    rt: Runtime,
) -> SnapshotResult:
    """A snapshot with an engine at hand (`rt`'s), under the project lock the caller holds.

    prune=False leaves the old automatic snapshots for the caller to prune (a restore reading one)."""
    t0 = time.monotonic()
    automatic = options.before is not None
    name = (
        store.auto_name(options.before)
        if options.before is not None
        else store.check_name(options.name or store.stamp())
    )
    stack = build_stack(settings)
    names = {s.name for s in stack.services}
    result = SnapshotResult(name, automatic=automatic)
    if "postgres" not in names:
        why = f"DATABASE_URL points to {settings.pg.host}, not a database this stack runs"
        if automatic:
            result.name, result.skipped = None, why
            return result
        raise UsageError(
            f"nothing to snapshot here: {why}",
            code="NOT_LOCAL",
            hint="a snapshot covers the stack qbctl runs on this machine; use pg_dump for others",
        )
    helpers: list[str] = []
    try:
        pg = _postgres(eng, stack, settings, helpers, events)
        if pg is None:
            why = f"no container or volume of project {settings.project} holds PostgreSQL data"
            if automatic:
                result.name, result.skipped = None, why
                return result
            raise Unavailable(why, code="NOT_RUNNING", hint="`qbctl up` starts the stack")
        rd = _redis(eng, stack, helpers) if "redis" in names else None
        live = pg.cid not in helpers
        if live:
            pg.wait_ready()  # a server still initialising (an `up` interrupted early) answers first
        empty = nothing_to_keep(pg, rd, settings.pg.dbname) if automatic else None
        if empty:
            result.name, result.skipped = None, empty
            return result
        _check_space(settings, pg, rd)
        with store.staging(settings, name) as tmp:
            meta: dict[str, Any] = {
                "format": store.FORMAT,
                "name": name,
                "automatic": automatic,
                "before": options.before,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "project": settings.project,
                "qbctl": __version__,
                "files": {},
            }
            inv, frozen = _dump_postgres(settings, pg, live, tmp, meta, events, result.notes, rt)
            meta["postgres"] = {"image": _image(eng, pg.cid), **inv.to_dict()}
            result.forms.append("logical")
            if options.physical and not automatic:
                result.notes += _physical(pg, frozen, inv, tmp, meta, events)
                if "physical" in meta:
                    result.forms.append("physical")
            result.postgres = {
                "version": inv.server_version,
                "timescaledb": inv.timescaledb,
                "database": inv.database,
                "tables": len(inv.tables),
                "rows": inv.rows,
            }
            if rd is not None:
                meta["redis"] = _dump_redis(rd, tmp, meta, events)
                result.redis = {"version": meta["redis"]["version"], "keys": sum(meta["redis"]["keys"].values())}
            store.write_meta(tmp, meta)
            result.bytes = sum(f["bytes"] for f in meta["files"].values())
    finally:
        for cid in helpers:
            eng.remove_container(cid)
    result.path = str(store.folder(settings) / name)
    result.restore_command = f"qbctl restore {name}"
    if prune:
        result.pruned = store.prune(settings, settings.values.qbctl_snapshot_keep)
    result.seconds = round(time.monotonic() - t0, 3)
    events(Event(Status.DONE, f"snapshot {name} taken in {result.seconds:.1f}s"))
    return result


def guard(eng: engine.Engine, settings: Settings, command: str, events: Events, *, rt: Runtime) -> SnapshotResult:
    """The automatic snapshot a destructive command takes first. When it fails, the command must not
    go on: the error says so and names --no-snapshot."""
    try:
        return take_with(eng, settings, SnapshotOptions(before=command), events, rt=rt)
    except QbctlError as exc:
        exc.message = f"{exc.message} (the snapshot before {command.replace('-', ' ')}; nothing was deleted)"
        exc.hint = (
            exc.hint + "; or " if exc.hint else ""
        ) + f"`qbctl {command.replace('-', ' ')} --no-snapshot` deletes without one"
        raise


def nothing_to_keep(pg: Postgres, rd: Redis | None, db: str) -> str | None:
    """Why a snapshot of this data would hold nothing (no database yet, no table and no key), or None."""
    if db not in pg.databases():
        return f"database {db} does not exist (yet): nothing to keep"
    if pg.rows(db)(inventory.TABLES_SQL) or (rd is not None and any(rd.keyspace().values())):
        return None
    return f"{db} has no tables and Redis no keys: nothing to keep"


def _image(eng: engine.Engine, cid: str) -> dict:
    ref, image_id = eng.container_image(cid)
    return {"ref": ref, "id": image_id}


def _postgres(
    eng: engine.Engine, stack: Stack, settings: Settings, helpers: list[str], events: Events
) -> Postgres | None:
    """The running postgres container, or a temporary one on the data volume, or None (no data)."""
    running = eng.containers(stack.project, "postgres", running_only=True)
    if running:
        return Postgres(eng, running[0].id, settings.pg.user)
    spec = stack.get("postgres")
    found = eng.volumes(stack.project, "postgres")
    info = eng.image_info(spec.image)
    volume = volumes.data_volume(stack.project, volumes.image_env(info).get("PG_MAJOR"), found)
    if volume not in found:
        return None
    image = helper_image(eng, spec.image, info, volume, found[volume])
    events(Event(Status.WORKING, f"starting a temporary server on volume {volume}", "postgres"))
    cid = helper(eng, stack, spec, image, volume, "snapshot")
    helpers.append(cid)
    pg = Postgres(eng, cid, settings.pg.user, name=f"temporary postgres on {volume}")
    pg.wait_ready()
    return pg


def helper_image(eng: engine.Engine, image: str, info: dict | None, volume: str, labels: dict) -> str:
    """The image to read a volume with: the stack's when its major fits, else the one that made the volume."""
    have = labels.get(LABEL_PG_MAJOR)
    if info is not None and (not have or volumes.image_env(info).get("PG_MAJOR", have) == have):
        return image
    old = volumes.recorded_image(labels, lambda ref: eng.image_info(ref) is not None)
    if old:
        return old
    raise Unavailable(
        f"volume {volume} holds PostgreSQL {have} data and no image of that version is here to read it with",
        code="IMAGE_UNAVAILABLE",
        hint=f"set QBCTL_POSTGRES_IMAGE to a PostgreSQL {have} image (e.g. "
        f"timescale/timescaledb:latest-pg{have}) for this command",
    )


def helper(
    eng: engine.Engine,
    stack: Stack,
    spec: ServiceSpec,
    image: str,
    volume: str,
    purpose: str,
    command: tuple[str, ...] | None = None,
    entrypoint: list[str] | None = None,
) -> str:
    """A temporary container of a service on one of its volumes (no ports, no network). A temporary
    PostgreSQL runs none of the data's TimescaleDB jobs (no background workers): they run on the
    stack's own server, and none changes data while it is dumped, loaded or checked here."""
    path = spec.volumes[0][1]
    if command is None and spec.name == "postgres":
        command = (*spec.command, "-c", "timescaledb.max_background_workers=0")  # the last value given wins
    return eng.run_helper(
        stack.project,
        f"{stack.container_name(spec.name)}-{purpose}",
        image,
        purpose,
        command=list(command or spec.command),
        environment=dict(spec.environment),
        binds={volume: path},
        mem_limit=spec.mem_limit,
        entrypoint=entrypoint,
    )


def _redis(eng: engine.Engine, stack: Stack, helpers: list[str]) -> Redis | None:
    running = eng.containers(stack.project, "redis", running_only=True)
    if running:
        return Redis(eng, running[0].id)
    spec = stack.get("redis")
    volume = spec.volumes[0][0]
    if volume not in eng.volumes(stack.project, "redis"):
        return None
    cid = helper(eng, stack, spec, spec.image, volume, "snapshot")
    helpers.append(cid)
    rd = Redis(eng, cid)
    rd.wait_ready()
    return rd


def _check_space(settings: Settings, pg: Postgres, rd: Redis | None) -> None:
    ((size,),) = pg.rows("postgres")(f"SELECT pg_database_size({inventory.literal(settings.pg.dbname)})::text")
    need = int(size) // DUMP_SHARE
    if rd is not None:
        need += int(rd.info().get("used_memory", "0"))
    store.check_space(store.folder(settings), need, "the snapshot")


def _dump_postgres(
    settings: Settings, pg: Postgres, live: bool, tmp, meta: dict, events: Events, notes: list[str], rt: Runtime
) -> tuple[inventory.Inventory, str]:
    """The dump and its inventory, and the transaction snapshot (pg_current_snapshot) they were read in."""
    db = settings.pg.dbname
    events(Event(Status.WORKING, f"dumping {db}", "postgres"))
    conn = None
    if live:
        try:
            conn = connect.connect(settings, wait=5, autocommit=False, rt=rt)
        except QbctlError as exc:  # a wrong password in DATABASE_URL must not keep `reset` from saving the data
            notes.append(
                f"could not log in with DATABASE_URL ({exc.message[:160]}), so the dump and its inventory "
                "were read one after the other through the container's socket: a write in between would "
                "make the restore's check refuse it"
            )
    out = store.Writer(tmp / store.PG_FILE)
    try:
        if conn is not None:
            with conn:
                inv, frozen = _dump_live(conn, pg, db, out)
        else:  # a temporary server nothing else writes to, or no login
            frozen = pg.xact_snapshot()
            inv = inventory.read(pg.rows(db))
            pg.dump(db, out)
    finally:
        meta["files"][store.PG_FILE] = out.close()
    check = pg.toc(store.chunks(tmp / store.PG_FILE))
    if check.exit_code != 0:
        raise CheckFailed(
            f"postgres: the dump just written cannot be read back: {check.stderr.strip()[:300]}",
            code="SNAPSHOT_FAILED",
            hint="nothing was kept; try again, and see `qbctl logs postgres`",
        )
    events(Event(Status.DONE, f"{db}: {len(inv.tables)} tables, {inv.rows:,} rows", "postgres"))
    return inv, frozen


def _physical(pg: Postgres, frozen: str, inv: inventory.Inventory, tmp, meta: dict, events: Events) -> list[str]:
    """The data directory beside the dump, kept only when it holds the same data: no unlogged table holds
    rows (the copy never has them), and no transaction committed between the dump's snapshot and the end
    of the copy, or (some did: TimescaleDB's job bookkeeping, another database) the database still reads
    as the dump's inventory after it. Notes on why not."""
    if inv.unlogged:  # pg_basebackup leaves their rows out: restored from it, they would be empty
        more = f" and {len(inv.unlogged) - 3} more" if len(inv.unlogged) > 3 else ""
        return [
            f"unlogged tables hold rows ({', '.join(inv.unlogged[:3])}{more}), which a copy of the data directory "
            "never holds, so this snapshot holds the dump only (it restores them, more slowly)"
        ]
    events(Event(Status.WORKING, "copying the data directory (pg_basebackup)", "postgres"))
    path = tmp / store.PHYSICAL_FILE
    out = store.Writer(path)
    try:
        pg.basebackup(out)
    finally:
        written = out.close()
    if pg.committed_since(frozen):
        events(Event(Status.WORKING, "transactions committed meanwhile: checking the database again", "postgres"))
        changed = inventory.compare(inv, inventory.read(pg.rows(inv.database), like=inv))
        if changed:
            path.unlink()
            return [
                f"the data changed while the data directory was copied ({changed[0]}), so this snapshot holds "
                "the dump only (it restores, more slowly); take it again for the fast form"
            ]
    meta["files"][store.PHYSICAL_FILE] = written
    meta["physical"] = {"databases": pg.databases()}
    events(Event(Status.DONE, f"data directory: {written['bytes'] / 2**20:,.0f} MB", "postgres"))
    return []


def _dump_live(conn, pg: Postgres, db: str, out: store.Writer) -> tuple[inventory.Inventory, str]:
    """pg_dump and the inventory in one transaction snapshot, exported by a host connection."""
    import psycopg

    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    conn.execute(inventory.READ_SETTINGS_SQL, [x for kv in inventory.READ_SETTINGS.items() for x in kv])
    exported = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    frozen = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
    failed: list[BaseException] = []

    def dump() -> None:
        try:
            pg.dump(db, out, snapshot=exported)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            failed.append(exc)

    worker = threading.Thread(target=dump, daemon=True)
    worker.start()
    try:
        inv = inventory.read(connect.psycopg_rows(conn))
    finally:
        while worker.is_alive():
            worker.join(0.1)
    conn.rollback()
    if failed:
        raise failed[0]
    return inv, frozen


def _dump_redis(rd: Redis, tmp, meta: dict, events: Events) -> dict:
    events(Event(Status.WORKING, "saving the dataset", "redis"))
    info = rd.info()
    out = store.Writer(tmp / store.REDIS_FILE)
    try:
        rd.dump(out)
    finally:
        meta["files"][store.REDIS_FILE] = out.close()
    keys = rdb.key_counts(tmp / store.REDIS_FILE)  # the file's own count, at the moment Redis forked
    if keys is None:
        raise CheckFailed("redis: its BGSAVE file is not an RDB file qbctl can read", code="SNAPSHOT_FAILED")
    events(Event(Status.DONE, f"{sum(keys.values()):,} keys", "redis"))
    return {"version": info.get("redis_version", ""), "keys": keys, "used_memory": int(info.get("used_memory", 0))}


@dataclass
class SnapshotList(Result):
    folder: str
    keep: int  # automatic snapshots kept (QBCTL_SNAPSHOT_KEEP)
    snapshots: list[dict] = field(default_factory=list)
    ok: bool = True
    error: QbctlError | None = None


def listing(settings: Settings) -> SnapshotList:
    """Every snapshot of the project, oldest first; a damaged one with its problem."""
    result = SnapshotList(str(store.folder(settings)), settings.values.qbctl_snapshot_keep)
    for e in store.entries(settings):
        meta = e.meta or {}
        pg, rd = meta.get("postgres") or {}, meta.get("redis") or {}
        result.snapshots.append(
            {
                "name": e.name,
                "created": e.created or None,
                "automatic": e.automatic,
                "before": meta.get("before"),
                "bytes": e.bytes,
                "postgres": pg.get("server_version"),
                "timescaledb": pg.get("timescaledb"),
                "database": pg.get("database"),
                "tables": len(pg.get("tables") or {}),
                "rows": sum(t["rows"] for t in (pg.get("tables") or {}).values()),
                "redis_keys": sum((rd.get("keys") or {}).values()) if rd else None,
                "problem": e.problem,
            }
        )
    return result


@dataclass
class SnapshotRemoved(Result):
    name: str
    bytes: int
    ok: bool = True
    error: QbctlError | None = None


def remove(settings: Settings, name: str) -> SnapshotRemoved:
    entry = store.find(settings, name)
    size = entry.bytes
    store.remove(entry)
    return SnapshotRemoved(name, size)
