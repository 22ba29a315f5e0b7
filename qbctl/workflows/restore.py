"""qbctl restore NAME: a snapshot's data back in the stack, checked before it replaces anything.

PostgreSQL, TimescaleDB's documented way: a NEW database, `timescaledb_pre_restore()`, pg_restore
(in the container, the image's own), `timescaledb_post_restore()`; the policy jobs stay paused
until the restored rows, checksums, hypertables (chunks, compression) and jobs match the
snapshot's inventory, so no job compresses or drops a chunk in between. Only then the switch,
in one transaction: the other sessions are ended, the running database is renamed away, the new
one renamed into place; the replaced one is dropped after that. Until the switch the running
data is untouched: any refusal or failure before it leaves it exactly as it was.
Redis: stopped, its RDB file replaced through the engine's archive API, started, keys counted.
Before all this the current data is snapshotted (`auto-restore-<time>`) unless --no-snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.db import jobs
from qbctl.db.timescale import extension_schema
from qbctl.engine import facade as engine
from qbctl.engine.lock import project_lock
from qbctl.engine.runtime import Runtime
from qbctl.errors import CheckFailed, NoSpace, QbctlError, TimescaleMissing, UsageError
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result
from qbctl.snapshots import inventory, store
from qbctl.snapshots.clients import Postgres, Redis
from qbctl.snapshots.inventory import Inventory, quote
from qbctl.stack.spec import build_stack

ROOM = 1.2  # the new database beside the old one until the switch: its size and a fifth more


@dataclass(frozen=True, kw_only=True)
class RestoreOptions:
    name: str
    snapshot_first: bool = True  # --no-snapshot turns it off
    logical: bool = False  # from the dump even where the copy of the data directory fits


@dataclass
class RestoreResult(Result):
    name: str
    database: str | None = None
    postgres: dict | None = None  # tables, rows, seconds, from_database, form (physical | logical)
    redis: dict | None = None  # keys, seconds
    safety_snapshot: str | None = None  # the automatic snapshot of the data this restore replaced
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ok: bool = True
    error: QbctlError | None = None


def find(settings: Settings, name: str) -> store.Entry:
    """The snapshot of that name (SNAPSHOT_NAME, SNAPSHOT_NOT_FOUND), not yet checked."""
    return store.find(settings, name)


def restore(settings: Settings, options: RestoreOptions, events: Events = ignore, *, rt: Runtime) -> RestoreResult:
    t0 = time.monotonic()
    entry = store.find(settings, options.name)
    meta = store.verify(entry)
    expected = Inventory.from_dict(meta["postgres"])
    result = RestoreResult(entry.name, settings.pg.dbname)
    _check_settings(settings, entry.name, expected, result)
    stack = build_stack(settings)
    services = [s for s in ("postgres", "redis") if s in {x.name for x in stack.services}]
    if "postgres" not in services:
        raise UsageError(
            f"DATABASE_URL points to {settings.pg.host}: restore puts data into the stack qbctl runs here",
            code="NOT_LOCAL",
        )
    eng = rt.engine
    up = _ensure_running(rt, settings, stack.project, services, events)
    if up is not None:
        result.fail(up)
        return result
    with project_lock(settings.project, events, eng=eng, holds=rt.holds):
        pg = Postgres(eng, eng.containers(stack.project, "postgres", running_only=True)[0].id, settings.pg.user)
        _check_server(pg, entry.name, expected)
        _check_room(pg, expected)
        if options.snapshot_first:
            from qbctl.snapshots import snapshot

            safety = snapshot.take_with(
                eng, settings, snapshot.SnapshotOptions(before="restore"), events, prune=False, rt=rt
            )
            result.safety_snapshot = safety.name
            if safety.skipped:
                result.notes.append(f"no snapshot of the current data first: {safety.skipped}")
        physical, why = _physical_fits(pg, settings, entry, expected, options)
        if why:
            result.notes.append(why)
        result.postgres = None
        if physical:
            try:
                result.postgres = restore_physical(eng, settings, stack, pg, entry, expected, events)
            except QbctlError as exc:  # rolled back: the running data is as it was
                result.notes.append(
                    f"the copy of the data directory could not be used ({exc.message}); restored from the dump"
                )
        if result.postgres is None:
            result.postgres = restore_postgres(pg, settings.pg.dbname, entry, expected, events)
        if meta.get("redis") and "redis" in services:
            result.redis = _restore_redis(eng, stack.project, entry, meta["redis"], events)
        elif meta.get("redis"):
            result.notes.append("the snapshot holds Redis data, but REDIS_URL points elsewhere: left out")
    store.prune(settings, settings.values.qbctl_snapshot_keep, protect=(entry.name,))
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _check_settings(settings: Settings, name: str, expected: Inventory, result: RestoreResult) -> None:
    """A snapshot restores into this stack's database as this stack's user; another user is refused."""
    if expected.user != settings.pg.user:
        raise CheckFailed(
            f"snapshot {name} was taken as PostgreSQL user {expected.user}, this stack logs in as "
            f"{settings.pg.user}; nothing was changed",
            code="SNAPSHOT_INCOMPATIBLE",
            hint=f"its objects, grants and TimescaleDB jobs belong to {expected.user}: set the user in "
            f"DATABASE_URL to {expected.user} (and `qbctl reset` if this stack's volume was made "
            "with the other one)",
        )
    if expected.database != settings.pg.dbname:
        result.notes.append(
            f"the snapshot is of database {expected.database}; restored into {settings.pg.dbname} (DATABASE_URL)"
        )


def _ensure_running(
    rt: Runtime, settings: Settings, project: str, services: Sequence[str], events: Events
) -> QbctlError | None:
    """Start what is not running (after a reset there is nothing): the restore needs the servers."""
    running = {c.service for c in rt.engine.containers(project, running_only=True)}
    if all(s in running for s in services):
        return None
    from qbctl.stack import up as up_mod

    events(Event(Status.INFO, "starting " + " and ".join(services)))
    up = up_mod.up(settings, up_mod.UpOptions(services=tuple(services)), events, rt=rt)
    return None if up.ok else up.error


def _check_server(pg: Postgres, name: str, expected: Inventory) -> None:
    major, version, tsdb_default = pg.server()
    if expected.major > major:
        raise CheckFailed(
            f"snapshot {name} is of PostgreSQL {expected.major}, the image runs PostgreSQL {major}: a "
            "dump restores into the same or a newer major only; nothing was changed",
            code="SNAPSHOT_INCOMPATIBLE",
            hint=f"set QBCTL_POSTGRES_IMAGE to a PostgreSQL {expected.major} image "
            f"(e.g. timescale/timescaledb:latest-pg{expected.major})",
        )
    if expected.timescaledb:
        if not tsdb_default:
            raise TimescaleMissing(
                f"snapshot {name} uses TimescaleDB {expected.timescaledb}; the image has no "
                "TimescaleDB; nothing was changed",
                hint="set QBCTL_POSTGRES_IMAGE to a TimescaleDB image",
            )
        if expected.timescaledb not in pg.timescaledb_versions():
            raise CheckFailed(
                f"snapshot {name} uses TimescaleDB {expected.timescaledb}; the image offers "
                f"{tsdb_default} but not that version, which a restore needs first; nothing was changed",
                code="SNAPSHOT_INCOMPATIBLE",
                hint=f"restore with an image that has TimescaleDB {expected.timescaledb} "
                "(QBCTL_POSTGRES_IMAGE), then move to the new one with `qbctl upgrade`",
            )


def _check_room(pg: Postgres, expected: Inventory) -> None:
    free = pg.free_bytes()
    need = int(expected.size_bytes * ROOM)
    if free is not None and free < need:
        raise NoSpace(
            f"the restore needs about {need // 2**20:,} MB in the engine's storage (the restored database "
            f"beside the running one until the switch); {free // 2**20:,} MB is free; nothing was changed",
            hint="free space on the Docker engine's disk (docker system df), then try again",
        )


def restore_postgres(pg: Postgres, db: str, entry: store.Entry, expected: Inventory, events: Events) -> dict:
    """The snapshot's database into a new database, checked, then switched in for `db`."""
    t0 = time.monotonic()
    new, replaced = _name(db, "restore"), _name(db, "replaced")
    maint = "postgres" if db != "postgres" else "template1"
    pg.psql(maint, f"DROP DATABASE IF EXISTS {quote(new)} WITH (FORCE)", "removing an earlier attempt")
    create_database(pg, maint, new, expected)
    try:
        _, paused = load(pg, new, store.chunks(entry.path / store.PG_FILE), expected, events)
    except BaseException:
        pg.psql(maint, f"DROP DATABASE IF EXISTS {quote(new)} WITH (FORCE)", "removing the failed attempt")
        raise
    events(Event(Status.WORKING, f"switching {db} to the restored data", "postgres"))
    # The jobs stay paused through the switch: it ends every session of both databases, a job's run
    # among them, which TimescaleDB would record as that job's failure.
    _switch(pg, maint, db, new, replaced)
    pg.psql(maint, f"DROP DATABASE IF EXISTS {quote(replaced)} WITH (FORCE)", "dropping the replaced database")
    if expected.timescaledb:
        resume_jobs(pg, db, paused)
        restart_jobs(pg, db)
    seconds = round(time.monotonic() - t0, 3)
    events(
        Event(Status.DONE, f"{db}: {len(expected.tables)} tables, {expected.rows:,} rows in {seconds:.1f}s", "postgres")
    )
    return {
        "tables": len(expected.tables),
        "rows": expected.rows,
        "seconds": seconds,
        "from_database": expected.database,
        "timescaledb": expected.timescaledb,
        "form": "logical",
    }


# Inside the data volume, beside the data directory's own files (PostgreSQL ignores them):
INCOMING = ".qbctl-incoming"  # the copy being unpacked while the server still runs on the old data
ASIDE = ".qbctl-replaced"  # the old data, moved aside (a rename) until the copy is checked
DELETING = ".qbctl-deleting"  # the old data once the copy passed: deleted in the background
MOVED = ".qbctl-all-moved"  # in ASIDE: every entry of the old data is there


def _physical_fits(
    pg: Postgres, settings: Settings, entry: store.Entry, expected: Inventory, options: RestoreOptions
) -> tuple[bool, str | None]:
    """Whether the copy of the data directory can be restored here; else why not (None: no copy, or asked)."""
    meta = entry.meta or {}  # verified: never None here
    if store.PHYSICAL_FILE not in meta.get("files", {}) or options.logical:
        return False, None
    major, _, _ = pg.server()
    if major != expected.major:
        return False, (
            f"the copy of the data directory is of PostgreSQL {expected.major}, the image runs {major}: "
            "restored from the dump"
        )
    if expected.timescaledb and expected.timescaledb not in pg.timescaledb_versions():
        return False, (
            f"the image lacks TimescaleDB {expected.timescaledb} for the data directory: restored from the dump"
        )
    if expected.database != settings.pg.dbname:
        return False, None
    extra = sorted(set(pg.databases()) - set(meta["physical"]["databases"]))
    if extra:
        return False, (
            f"the server holds databases the copy of the data directory does not ({', '.join(extra)}), "
            f"which it would remove: restored from the dump, which replaces {settings.pg.dbname} only"
        )
    return True, None


def restore_physical(
    eng: engine.Engine, settings: Settings, stack, pg: Postgres, entry: store.Entry, expected: Inventory, events: Events
) -> dict:
    """The data directory put back. The copy is unpacked into the volume while the server still runs on
    the old data; then the server stops for two renames (old data aside, copy in place), starts on the
    copy, gets the password of DATABASE_URL, and its rows, hypertables and jobs are checked (the rows'
    contents need no second look: the file matched its SHA-256, and it was checked against the dump's
    inventory when it was taken). Only then is the old data deleted. Any failure before that renames
    the old data back. An unpack cut short (SIGKILL, the engine gone) leaves the old data in place."""
    from qbctl.snapshots.snapshot import helper

    t0 = time.monotonic()
    spec = stack.get("postgres")
    path = spec.volumes[0][1]
    volume = next(name for name, dest in eng.mounts(pg.cid).items() if dest == path)
    incoming, aside, db = f"{path}/{INCOMING}", f"{path}/{ASIDE}", settings.pg.dbname
    left = eng.exec_run(pg.cid, ["sh", "-c", f"rm -rf {incoming} {path}/{DELETING}; test -e {aside}"])
    if left.exit_code == 0:
        raise CheckFailed(
            f"an interrupted restore left the data it replaced in {volume} at {ASIDE}; it is kept, untouched",
            code="RESTORE_LEFTOVER",
        )
    events(Event(Status.WORKING, "unpacking the data directory (the server still runs)", "postgres"))
    _sh(eng, pg.cid, f"mkdir {incoming}", "making room for the copy")
    eng.put_archive(pg.cid, incoming, store.chunks(entry.path / store.PHYSICAL_FILE))
    events(Event(Status.WORKING, "switching the data directory", "postgres"))
    eng.stop(pg.cid)
    try:
        work = helper(eng, stack, spec, spec.image, volume, "restore", command=("-c", "sleep 3600"), entrypoint=["sh"])
        try:  # MOVED marks the old data as wholly aside: from then on what is in place is the copy's
            _sh(
                eng,
                work,
                f"mkdir {aside} && find {path} -mindepth 1 -maxdepth 1 ! -name {ASIDE} ! -name {INCOMING} "
                f"-exec mv -t {aside} {{}} + && touch {aside}/{MOVED} && find {incoming} -mindepth 1 "
                f"-maxdepth 1 -exec mv -t {path} {{}} + && rmdir {incoming}",
                "putting the copy in place",
            )
        finally:
            eng.remove_container(work, timeout=0)  # a shell that sleeps: nothing to stop gracefully
        eng.start(pg.cid)
        pg.wait_ready()
        password = settings.pg.password.replace("'", "''")
        pg.script(
            "postgres",
            [f"ALTER ROLE {quote(settings.pg.user)} PASSWORD '{password}';\n".encode()],
            "setting the password of DATABASE_URL",
        )  # on stdin: never on a command line
        events(Event(Status.WORKING, f"checking {db} against the snapshot", "postgres"))
        rows = pg.rows(db)
        if expected.timescaledb:
            # The server runs the copy's jobs from its start: they are held while it is checked (a run
            # under way ends first), and refresh registrations the copy carries from a refresh that ran
            # when it was taken are removed, or their refresh policies would fail "due to a concurrent
            # refresh" while a process of that number lives.
            held = jobs.hold(
                rows,
                said=lambda ids: events(
                    Event(
                        Status.WAITING,
                        f"TimescaleDB job {jobs.jobs_text(ids)} runs on the restored data; waiting for its run to end",
                        "postgres",
                    )
                ),
            )
            pg.psql(
                db,
                STALE_REFRESHES.format(older="pg_catalog.pg_postmaster_start_time()"),
                "removing the copy's refresh registrations",
            )
        _, _, offered = pg.server()
        if expected.timescaledb and offered and _version(offered) > _version(expected.timescaledb):
            pg.psql(db, "ALTER EXTENSION timescaledb UPDATE", "ALTER EXTENSION timescaledb UPDATE")
        problems = inventory.compare(expected, inventory.read(rows, like=expected, checksums=False), jobs_ran=True)
        if problems:
            raise CheckFailed(f"it does not match the snapshot: {problems[0]}", code="RESTORE_VERIFY_FAILED")
        # The commit: one rename, after which the old data is never put back. Inside the try, so that
        # an error or Ctrl-C before it puts the old data back (after it, there is nothing aside to put back).
        _sh(eng, pg.cid, f"mv {aside} {path}/{DELETING}", "marking the old data for deletion")
        if expected.timescaledb:
            jobs.release(rows, held)
    except BaseException:
        eng.stop(pg.cid)
        _put_back(eng, stack, spec, volume, path)
        eng.start(pg.cid)
        pg.wait_ready()
        raise
    eng.exec_detached(pg.cid, ["rm", "-rf", f"{path}/{DELETING}"])  # while the server already serves
    seconds = round(time.monotonic() - t0, 3)
    events(
        Event(
            Status.DONE,
            f"{db}: {len(expected.tables)} tables, {expected.rows:,} rows in {seconds:.1f}s (data directory)",
            "postgres",
        )
    )
    return {
        "tables": len(expected.tables),
        "rows": expected.rows,
        "seconds": seconds,
        "from_database": expected.database,
        "timescaledb": expected.timescaledb,
        "form": "physical",
    }


def _sh(eng: engine.Engine, cid: str, script: str, what: str) -> None:
    r = eng.exec_run(cid, ["sh", "-c", script])
    if r.exit_code != 0:
        raise CheckFailed(f"{what} failed: {r.stderr.strip()[:300]}", code="RESTORE_FAILED")


def _put_back(eng: engine.Engine, stack, spec, volume: str, path: str) -> None:
    """The old data back in place after a failed physical restore (the server stopped). When all of it
    was aside (MOVED), what is in place is the copy's and goes first; a move cut short is undone entry
    by entry, never over an entry still in place. The copy's leftovers are removed."""
    from qbctl.snapshots.snapshot import helper

    aside, incoming = f"{path}/{ASIDE}", f"{path}/{INCOMING}"
    work = helper(eng, stack, spec, spec.image, volume, "restore", command=("-c", "sleep 3600"), entrypoint=["sh"])
    try:
        _sh(
            eng,
            work,
            f"if [ -d {aside} ]; then if [ -e {aside}/{MOVED} ]; then find {path} -mindepth 1 -maxdepth 1 "
            f"! -name {ASIDE} ! -name {INCOMING} -exec rm -rf {{}} + && rm {aside}/{MOVED}; fi && "
            f"find {aside} -mindepth 1 -maxdepth 1 -exec mv -n -t {path} {{}} + && rmdir {aside}; fi; "
            f"rm -rf {incoming}",
            "putting the old data back",
        )
    finally:
        eng.remove_container(work, timeout=0)


def _name(db: str, what: str) -> str:
    suffix = f"_qbctl_{what}"
    return db.encode()[: 63 - len(suffix)].decode("utf-8", "ignore") + suffix


def create_database(pg: Postgres, maint: str, db: str, expected: Inventory) -> None:
    """A new database like the snapshot's: its encoding and locale (the server's locale if it lacks that one)."""
    base = f"CREATE DATABASE {quote(db)} OWNER {quote(pg.user)} TEMPLATE template0 ENCODING {_lit(expected.encoding)}"
    try:
        pg.psql(
            maint,
            f"{base} LC_COLLATE {_lit(expected.collate)} LC_CTYPE {_lit(expected.ctype)}",
            "creating the database",
        )
    except CheckFailed:
        pg.psql(maint, base, "creating the database")


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


STALE_REFRESHES = """DO $$ BEGIN
  IF pg_catalog.to_regclass('_timescaledb_catalog.continuous_aggs_jobs_refresh_ranges') IS NOT NULL THEN
    DELETE FROM _timescaledb_catalog.continuous_aggs_jobs_refresh_ranges WHERE created_at < {older};
  END IF;
END $$"""
# TimescaleDB registers each refresh's window there (with its process number) for the time it runs, and
# a dump or a copy of the data directory taken meanwhile carries the row. Restored, it stands for a
# refresh in progress as long as some process of that number lives: its refresh policy fails "due to a
# concurrent refresh" at every run. Rows older than the restore cannot be a refresh in progress.


def load_dump(
    pg: Postgres, db: str, fill: Callable[[], None], timescaledb: str | None, events: Events
) -> tuple[str, list[str]]:
    """A dump loaded into the empty database `db` by `fill()` (a pg_restore), TimescaleDB's way (pre_restore,
    the restore, post_restore) when the dump's database used TimescaleDB (its version: `timescaledb`). Its
    jobs come out paused (`scheduled = false`); returns TimescaleDB's schema and the jobs paused."""
    paused: list[str] = []
    ts = "public"  # TimescaleDB's schema, named in each call: the user's search_path may leave it out
    if timescaledb:
        # In public, as pg_dump writes it (WITH SCHEMA public), wherever the user's search_path points.
        pg.psql(
            db,
            f"CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public VERSION {_lit(timescaledb)}",
            "creating the timescaledb extension",
        )
        ts = extension_schema(pg.rows(db))
        pg.psql(db, f"SELECT {ts}.timescaledb_pre_restore()", "timescaledb_pre_restore()")
    events(Event(Status.WORKING, f"pg_restore into {db}", "postgres"))
    fill()
    if timescaledb:
        paused = [
            i
            for (i,) in pg.rows(db)(
                "UPDATE _timescaledb_config.bgw_job SET scheduled = false WHERE scheduled RETURNING id::text"
            )
        ]
        pg.psql(db, STALE_REFRESHES.format(older="'infinity'"), "removing the dump's refresh registrations")
        pg.psql(db, f"SELECT {ts}.timescaledb_post_restore()", "timescaledb_post_restore()")
        _, _, offered = pg.server()
        if offered and _version(offered) > _version(timescaledb):
            # As its first command in a new session (psql -X -c), as TimescaleDB asks.
            pg.psql(db, "ALTER EXTENSION timescaledb UPDATE", "ALTER EXTENSION timescaledb UPDATE")
    return ts, paused


def load(pg: Postgres, db: str, dump, expected: Inventory, events: Events) -> tuple[Inventory, list[str]]:
    """pg_restore into the empty database `db` (TimescaleDB's procedure), then check it against `expected`.

    TimescaleDB's jobs are paused from the restore until the check passes, so none changes what is
    being checked; they stay paused for the caller to resume (`resume_jobs`) once nothing ends a
    session any more (a restore's switch does). Returns what was read, and the paused jobs."""
    ts, paused = load_dump(pg, db, lambda: pg.restore(db, dump), expected.timescaledb, events)
    events(Event(Status.WORKING, f"checking {db} against the snapshot", "postgres"))
    actual = inventory.read(pg.rows(db), like=expected)
    for job in actual.jobs:
        if str(job["id"]) in paused:
            job["scheduled"] = True
    problems = inventory.compare(expected, actual)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckFailed(
            f"the restored data does not match the snapshot: {problems[0]}{more}; the running data was not touched",
            code="RESTORE_VERIFY_FAILED",
            problems=problems,
            hint="the snapshot's dump and its inventory disagree: take a new snapshot",
        )
    due = [(j["id"], j["next_start"]) for j in expected.jobs if j.get("next_start")]
    if due:  # each job due when it was at the snapshot (or at once, if that has passed), not all now
        pg.psql(
            db,
            "SELECT " + ", ".join(f"{ts}.alter_job({int(i)}, next_start => {_lit(t)}::timestamptz)" for i, t in due),
            "setting when the jobs run next",
        )
    return actual, paused


def resume_jobs(pg: Postgres, db: str, paused: list[str]) -> None:
    """The jobs `load` paused, scheduled again."""
    if paused:
        pg.psql(
            db,
            f"UPDATE _timescaledb_config.bgw_job SET scheduled = true WHERE id IN ({','.join(paused)})",
            "resuming the jobs",
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("-")[0].split(".") if p.isdigit())


def _switch(pg: Postgres, maint: str, db: str, new: str, replaced: str) -> None:
    """In one transaction: end the other sessions, rename the running database away and the new one in."""
    pg.psql(maint, f"DROP DATABASE IF EXISTS {quote(replaced)} WITH (FORCE)", "removing an earlier attempt")
    away = f" ALTER DATABASE {quote(db)} RENAME TO {quote(replaced)};" if db in pg.databases() else ""
    sql = (
        f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ({_lit(db)}, {_lit(new)})"
        f" AND pid <> pg_backend_pid();{away} ALTER DATABASE {quote(new)} RENAME TO {quote(db)};"
    )
    for attempt in range(5):
        try:
            pg.psql(maint, sql, "the switch")
            return
        except CheckFailed as exc:
            # A session that reconnected at once (a TimescaleDB scheduler, the backend's pool): again.
            if "being accessed by other users" not in exc.message or attempt == 4:
                raise
            time.sleep(0.2)


def restart_jobs(pg: Postgres, db: str) -> None:
    """TimescaleDB's schedulers after a database was renamed, as it asks ('restart background workers')."""
    for schema in ("_timescaledb_functions", "_timescaledb_internal"):
        try:
            pg.psql(db, f"SELECT {schema}.restart_background_workers()", "restarting TimescaleDB's jobs")
            return
        except CheckFailed:
            continue


def _restore_redis(eng: engine.Engine, project: str, entry: store.Entry, want: dict, events: Events) -> dict:
    t0 = time.monotonic()
    cid = eng.containers(project, "redis", running_only=True)[0].id
    rd = Redis(eng, cid)
    folder = rd.cli("config", "get", "dir").split("\n")[1].strip()
    filename = rd.cli("config", "get", "dbfilename").split("\n")[1].strip()
    owner = eng.exec_run(cid, ["stat", "-c", "%u %g", folder]).stdout.split()
    uid, gid = (int(owner[0]), int(owner[1])) if len(owner) == 2 else (0, 0)
    path = entry.path / store.REDIS_FILE
    events(Event(Status.WORKING, f"replacing {folder}/{filename}", "redis"))
    eng.stop(cid)  # Redis writes its dataset on the way down; replaced right after
    try:
        eng.put_file(cid, folder, filename, store.chunks(path), path.stat().st_size, uid, gid)
    finally:
        eng.start(cid)
    rd.wait_ready()
    got = rd.keyspace()
    for db, keys in (want.get("keys") or {}).items():
        if got.get(db, 0) != keys:
            raise CheckFailed(
                f"redis: {got.get(db, 0)} keys in {db} after the restore, the snapshot has {keys}",
                code="RESTORE_VERIFY_FAILED",
            )
    seconds = round(time.monotonic() - t0, 3)
    keys = sum(got.values())
    events(Event(Status.DONE, f"{keys:,} keys in {seconds:.1f}s", "redis"))
    return {"keys": keys, "seconds": seconds}
