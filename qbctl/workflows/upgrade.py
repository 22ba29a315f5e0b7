"""qbctl upgrade: move the data to the PostgreSQL major and TimescaleDB version of the image.

- Same PostgreSQL major, newer TimescaleDB in the image: `ALTER EXTENSION timescaledb UPDATE` as
  the first command of a new session (psql -X -c) in every database that has the extension, on
  the running server (or a temporary one on the volume when none runs). An extension update
  cannot be undone in place, so a snapshot is taken first (unless --no-snapshot): `qbctl restore`
  of it brings the data back as it was before the update (loaded at its old version, which the
  image must still ship, then updated again).
- Another PostgreSQL major: the stack's postgres container is removed; a temporary container of
  the OLD image (recorded on the volume when qbctl made it, or --from-image) serves the old
  volume while pg_dumpall --globals-only and pg_dump of every database write to the project
  folder, with an inventory of each (rows and checksums per table, hypertables, jobs); a NEW
  volume `<project>_pgdata_pg<major>` is initialised by the new image, the roles and databases
  restored (TimescaleDB's pre/post-restore procedure) and each checked against its inventory.
  Then `up` starts PostgreSQL on it (the image's major picks the volume: stack/volumes.py), and
  `db verify` checks the TimescaleDB policies where there are any. The old volume is kept,
  untouched, until the user removes it (the command is printed); pinning the old image again
  runs on it as before.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.db import jobs
from qbctl.engine import facade as engine
from qbctl.engine.labels import LABEL_PG_MAJOR, LABEL_SERVICE
from qbctl.engine.lock import project_lock
from qbctl.engine.runtime import Runtime
from qbctl.errors import CheckFailed, QbctlError, Unavailable, UsageError
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result
from qbctl.snapshots import inventory, store
from qbctl.snapshots.clients import Postgres
from qbctl.snapshots.snapshot import helper
from qbctl.stack import volumes
from qbctl.stack.spec import build_stack
from qbctl.workflows import restore

MISSING_LIB = re.compile(r'could not access file "\$libdir/timescaledb-([0-9][^"]*)"')


@dataclass(frozen=True, kw_only=True)
class UpgradeOptions:
    from_image: str | None = None  # the image that made the volume, when the volume does not record it


@dataclass(frozen=True)
class UpgradePlan:
    kind: str  # none | timescaledb (same major: update the extension where needed) | major
    reason: str
    image: str  # the stack's image, the one the data moves to
    volume: str | None = None  # the volume holding the data now
    target: str | None = None  # major: the new volume
    from_major: str | None = None
    to_major: str | None = None
    from_image: str | None = None  # major: the image the data is dumped with
    question: str | None = None  # what to confirm before it runs


@dataclass
class UpgradeResult(Result):
    kind: str
    reason: str
    volume: str | None = None
    target: str | None = None
    from_major: str | None = None
    to_major: str | None = None
    timescaledb: list[dict] = field(default_factory=list)  # per database: from, to
    databases: list[dict] = field(default_factory=list)  # moved: database, tables, rows
    verify: dict | None = None  # db verify after the move
    snapshot: str | None = None  # TimescaleDB update: the snapshot taken before it
    kept_volume: str | None = None
    remove_command: str | None = None
    seconds: float = 0.0
    ok: bool = True
    error: QbctlError | None = None


def plan(settings: Settings, options: UpgradeOptions = UpgradeOptions(), *, rt: Runtime) -> UpgradePlan:
    """What an upgrade would do, from the image and the volume's labels (nothing is changed)."""
    stack = build_stack(settings)
    if "postgres" not in {s.name for s in stack.services}:
        raise UsageError(
            f"DATABASE_URL points to {settings.pg.host}: upgrade moves the data of the stack qbctl runs here",
            code="NOT_LOCAL",
        )
    spec = stack.get("postgres")
    eng = rt.engine
    info = eng.image_info(spec.image) or eng.pull(spec)
    to_major = volumes.image_env(info).get("PG_MAJOR")
    if not to_major:
        raise Unavailable(
            f"image {spec.image} does not say its PostgreSQL major (no PG_MAJOR in its environment)",
            code="IMAGE_UNKNOWN",
            hint="use an official postgres or timescale/timescaledb image",
        )
    found = eng.volumes(stack.project, "postgres")
    volume = volumes.data_volume(stack.project, to_major, found)
    if volume not in found:
        return UpgradePlan(
            "none",
            f"no data volume yet: `qbctl up` creates one for PostgreSQL {to_major}",
            spec.image,
            to_major=to_major,
        )
    from_major = found[volume].get(LABEL_PG_MAJOR) or _pg_version(eng, stack.project, spec.image, volume)
    if from_major == to_major:
        return UpgradePlan(
            "timescaledb",
            f"volume {volume} holds PostgreSQL {to_major} data, as the image runs",
            spec.image,
            volume,
            from_major=from_major,
            to_major=to_major,
        )
    if int(from_major) > int(to_major):
        raise CheckFailed(
            f"volume {volume} holds PostgreSQL {from_major} data, newer than {spec.image} "
            f"(PostgreSQL {to_major}); a major version cannot be moved down",
            code="VOLUME_INCOMPATIBLE",
            hint=f"set QBCTL_POSTGRES_IMAGE to a PostgreSQL {from_major} image",
        )
    old = options.from_image or volumes.recorded_image(found[volume], lambda ref: eng.image_info(ref) is not None)
    if not old:
        raise UsageError(
            f"the image that made volume {volume} (PostgreSQL {from_major}) is not known here",
            code="FROM_IMAGE_NEEDED",
            hint=f"pass --from-image with a PostgreSQL {from_major} image, e.g. "
            f"--from-image timescale/timescaledb:latest-pg{from_major}",
        )
    old_info = eng.image_info(old)
    if old_info is None:
        raise Unavailable(
            f"image {old} is not on this engine",
            code="IMAGE_UNAVAILABLE",
            hint=f"`docker pull {old}`, or pass another PostgreSQL {from_major} image with --from-image",
        )
    if volumes.image_env(old_info).get("PG_MAJOR", from_major) != from_major:
        raise UsageError(
            f"--from-image {old} runs PostgreSQL {volumes.image_env(old_info)['PG_MAJOR']}, the volume "
            f"holds PostgreSQL {from_major} data",
            code="FROM_IMAGE_NEEDED",
        )
    target = volumes.upgraded_name(stack.project, to_major)
    if target in found or eng.volume_exists(target):
        raise CheckFailed(
            f"volume {target} exists already (an earlier upgrade?); nothing was changed",
            code="NAME_CONFLICT",
            hint=f"`docker volume rm {target}` removes it with its data, then `qbctl upgrade` again",
        )
    question = (
        f"This stops PostgreSQL of project {settings.project!r} and moves its data from volume {volume} "
        f"(PostgreSQL {from_major}) into a new volume {target} (PostgreSQL {to_major}); {volume} is kept."
    )
    reason = f"volume {volume} holds PostgreSQL {from_major} data, {spec.image} runs PostgreSQL {to_major}"
    return UpgradePlan("major", reason, spec.image, volume, target, from_major, to_major, old, question)


def _pg_version(eng: engine.Engine, project: str, image: str, volume: str) -> str:
    """PG_VERSION of a volume qbctl did not label, read by a container that only prints it."""
    cid = eng.run_helper(
        project,
        f"{project}-postgres-version",
        image,
        "upgrade",
        entrypoint=["cat"],
        command=["/data/PG_VERSION"],
        environment={},
        binds={volume: "/data"},
    )
    try:
        for _ in range(100):
            if eng.state(cid).status in ("exited", "dead"):
                break
            time.sleep(0.05)
        text = " ".join(eng.tail_logs(cid, 1)).strip()
    finally:
        eng.remove_container(cid)
    if not text.isdigit():
        raise CheckFailed(
            f"volume {volume} holds no PostgreSQL data directory qbctl can read ({text[:80]!r})",
            code="VOLUME_INCOMPATIBLE",
        )
    return text


def upgrade(
    settings: Settings, todo: UpgradePlan, events: Events = ignore, *, snapshot_first: bool = True, rt: Runtime
) -> UpgradeResult:
    t0 = time.monotonic()
    result = UpgradeResult(todo.kind, todo.reason, todo.volume, todo.target, todo.from_major, todo.to_major)
    if todo.kind == "none":
        return result
    eng = rt.engine
    with project_lock(settings.project, events, eng=eng, holds=rt.holds):
        if todo.kind == "timescaledb":
            _timescaledb(eng, settings, todo, result, events, snapshot_first, rt)
        else:
            _major(eng, settings, todo, result, events, rt)
    if todo.kind == "major" or any(t["from"] != t["to"] for t in result.timescaledb):
        result.verify = _verify(settings, result, rt)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


# --- TimescaleDB, same major ----------------------------------------------------------------------
def _timescaledb(
    eng: engine.Engine,
    settings: Settings,
    todo: UpgradePlan,
    result: UpgradeResult,
    events: Events,
    snapshot_first: bool,
    rt: Runtime,
) -> None:
    volume = todo.volume
    assert volume is not None  # a timescaledb plan names the volume (plan)
    stack = build_stack(settings)
    spec = stack.get("postgres")
    running = [c for c in eng.containers(stack.project, "postgres", running_only=True)]
    image_id = (eng.image_info(spec.image) or {}).get("Id")
    live = bool(running) and eng.container_image(running[0].id)[1] == image_id
    temporary = None

    def server() -> Postgres:
        nonlocal temporary
        if live:
            return Postgres(eng, running[0].id, settings.pg.user)
        for c in eng.containers(stack.project, "postgres", running_only=True):  # an older image's server
            eng.remove_container(c.id)
        events(Event(Status.WORKING, f"starting {spec.image} on {volume}", "postgres"))
        temporary = helper(eng, stack, spec, spec.image, volume, "upgrade")
        return Postgres(eng, temporary, settings.pg.user, name=f"temporary postgres on {volume}")

    def stop_temporary() -> None:
        nonlocal temporary
        if temporary:
            eng.remove_container(temporary)
            temporary = None

    try:
        pg = server()
        pg.wait_ready()
        _, _, offered = pg.server()
        # template1 too: the TimescaleDB image creates the extension there, for every database made later.
        have = {db: v for db in (*pg.databases(), "template1") if (v := _extension_version(pg, db)) is not None}
        stale = {db: v for db, v in have.items() if offered and v != offered}
        if stale and snapshot_first:
            stop_temporary()  # the snapshot reads the volume with a server of its own
            from qbctl.snapshots import snapshot

            result.snapshot = snapshot.guard(eng, settings, "upgrade", events, rt=rt).name
            if not live:
                pg = server()
                pg.wait_ready()
        for db, version in have.items():
            entry: dict[str, str | None] = {"database": db, "from": version, "to": version}
            if db in stale:
                events(
                    Event(
                        Status.WORKING, f"{db}: ALTER EXTENSION timescaledb UPDATE ({version} -> {offered})", "postgres"
                    )
                )
                # The update restarts the database's scheduler, which ends the runs under way (each
                # recorded as a crash): its jobs are held first, a run under way ending before.
                rows = pg.rows(db)

                def said(ids: list[int], db: str = db) -> None:
                    events(
                        Event(
                            Status.WAITING,
                            f"{db}: TimescaleDB job {jobs.jobs_text(ids)} is running; waiting for its run to end",
                            "postgres",
                        )
                    )

                held = jobs.hold(rows, said=said)
                try:
                    pg.psql(db, "ALTER EXTENSION timescaledb UPDATE", f"ALTER EXTENSION timescaledb UPDATE in {db}")
                except BaseException:
                    jobs.release(rows, held, after_error=True)
                    raise
                jobs.release(rows, held)
                entry["to"] = _extension_version(pg, db)
                events(Event(Status.DONE, f"{db}: TimescaleDB {version} -> {entry['to']}", "postgres"))
            result.timescaledb.append(entry)
    finally:
        stop_temporary()
    if not any(t["from"] != t["to"] for t in result.timescaledb):
        result.reason += (
            "; TimescaleDB is the image's version everywhere: nothing to upgrade"
            if result.timescaledb
            else "; no database uses TimescaleDB: nothing to upgrade"
        )
    if not live:  # the stack's postgres was not running the image: `up` starts it on the updated data
        _up(settings, result, events, rt)


def _extension_version(pg: Postgres, db: str) -> str | None:
    """The installed TimescaleDB version of a database, also when the image no longer ships its library."""
    try:
        found = pg.rows(db)("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    except CheckFailed as exc:
        missing = MISSING_LIB.search(exc.message)
        if missing:
            return missing.group(1)
        raise
    return found[0][0] if found else None


# --- another PostgreSQL major ---------------------------------------------------------------------
def _major(
    eng: engine.Engine, settings: Settings, todo: UpgradePlan, result: UpgradeResult, events: Events, rt: Runtime
) -> None:
    target = todo.target
    assert target is not None  # a major plan names the new volume (plan)
    stack = build_stack(settings)
    spec = stack.get("postgres")
    work = (
        store.folder(settings).parent / "upgrades" / f"{todo.volume}-pg{todo.from_major}-to-pg{todo.to_major}-"
        f"{store.stamp()}"
    )
    work.mkdir(parents=True)
    for c in eng.containers(stack.project, "postgres"):
        events(Event(Status.WORKING, "stopping the stack's postgres", "postgres"))
        eng.remove_container(c.id)
    dumps = _dump_old(eng, settings, todo, work, events)
    info = eng.image_info(spec.image) or {}
    eng.create_volume(
        stack.project,
        target,
        {LABEL_SERVICE: "postgres", **volumes.created_by(volumes.image_env(info), spec.image, info.get("Id", ""))},
    )
    try:
        _load_new(eng, settings, todo, dumps, result, events)
    except BaseException:
        eng.remove_volume(stack.project, target)  # incomplete; the old volume is as it was
        raise
    shutil.rmtree(work, ignore_errors=True)
    result.kept_volume = todo.volume
    result.remove_command = f"docker volume rm {todo.volume}"
    _up(settings, result, events, rt)


def _dump_old(eng: engine.Engine, settings: Settings, todo: UpgradePlan, work, events: Events) -> list[tuple]:
    """Roles, then every database with its inventory, from the old image on the old volume."""
    assert todo.from_image is not None and todo.volume is not None  # a major plan names both (plan)
    stack = build_stack(settings)
    events(Event(Status.WORKING, f"starting {todo.from_image} on {todo.volume}", "postgres"))
    cid = helper(eng, stack, stack.get("postgres"), todo.from_image, todo.volume, "upgrade-old")
    old = Postgres(eng, cid, settings.pg.user, name=f"PostgreSQL {todo.from_major} on {todo.volume}")
    dumps = []
    try:
        old.wait_ready()
        out = store.Writer(work / "globals.sql")
        try:
            old.dump_globals(out)
        finally:
            out.close()
        for i, db in enumerate(old.databases()):
            events(Event(Status.WORKING, f"dumping {db}", "postgres"))
            inv = inventory.read(old.rows(db))
            path = work / f"database-{i}.dump"  # numbered: a database's name may hold any character, / too
            out = store.Writer(path)
            try:
                old.dump(db, out)
            finally:
                out.close()
            dumps.append((db, path, inv))
            events(Event(Status.DONE, f"dumped {db}: {len(inv.tables)} tables, {inv.rows:,} rows", "postgres"))
    finally:
        eng.remove_container(cid)
    return dumps


def _load_new(
    eng: engine.Engine, settings: Settings, todo: UpgradePlan, dumps: list[tuple], result: UpgradeResult, events: Events
) -> None:
    assert todo.target is not None  # a major plan names the new volume (plan)
    stack = build_stack(settings)
    events(Event(Status.WORKING, f"initialising {todo.target} with {todo.image}", "postgres"))
    cid = helper(eng, stack, stack.get("postgres"), todo.image, todo.target, "upgrade-new")
    new = Postgres(eng, cid, settings.pg.user, name=f"PostgreSQL {todo.to_major} on {todo.target}")
    try:
        new.wait_ready(timeout=120)
        wanted = {inv.timescaledb for _, _, inv in dumps if inv.timescaledb}
        missing = wanted - set(new.timescaledb_versions())
        if missing:
            raise Unavailable(
                f"{todo.image} does not offer TimescaleDB {', '.join(sorted(missing))}, which the data "
                "uses; nothing was changed",
                code="TIMESCALEDB_UNAVAILABLE",
                hint="use an image of the new PostgreSQL major that ships that TimescaleDB version too "
                "(timescale/timescaledb images ship several), or update TimescaleDB first with the "
                "old image (`qbctl upgrade` with it)",
            )
        new.script("postgres", [_globals(dumps[0][1].parent / "globals.sql", settings.pg.user)], "restoring the roles")
        present = set(new.databases())
        for db, path, inv in dumps:
            if db not in present:
                restore.create_database(new, "postgres", db, inv)
            events(Event(Status.WORKING, f"restoring {db}", "postgres"))
            actual, paused = restore.load(new, db, store.chunks(path), inv, events)
            restore.resume_jobs(new, db, paused)  # this server runs no jobs (helper: no background workers)
            result.databases.append({"database": db, "tables": len(actual.tables), "rows": actual.rows})
            events(
                Event(Status.DONE, f"{db}: {len(actual.tables)} tables, {actual.rows:,} rows, as before", "postgres")
            )
    finally:
        eng.remove_container(cid)


def _globals(path, user: str) -> bytes:
    """pg_dumpall --globals-only without the creation of the stack's own user, whom the new image already
    created with the password in DATABASE_URL (its CREATE ROLE and ALTER ROLE ... WITH lines). Its
    settings (ALTER ROLE ... SET) and grants stay. pg_dumpall writes the name quoted where it must be."""
    name = "(?:" + re.escape(user) + "|" + re.escape('"' + user.replace('"', '""') + '"') + ")"
    own = re.compile(rf"^(?:CREATE ROLE {name};|ALTER ROLE {name} WITH )")
    lines = path.read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not own.match(line)).encode()


def _up(settings: Settings, result: UpgradeResult, events: Events, rt: Runtime) -> None:
    from qbctl.stack import up as up_mod

    up = up_mod.up(settings, up_mod.UpOptions(services=("postgres",)), events, rt=rt)
    if not up.ok:
        result.fail(up.error)


def _verify(settings: Settings, result: UpgradeResult, rt: Runtime) -> dict | None:
    """`db verify` where the database uses TimescaleDB and the policies are at hand."""
    from qbctl.db import files, timescale

    if not result.ok:
        return None
    try:
        files.sql_dir(settings)
    except UsageError:
        return {"ok": None, "detail": "skipped: no sql/ folder here to read the declared policies from"}
    try:
        checked = timescale.verify(settings, rt=rt)
    except QbctlError as exc:
        if exc.code == "TIMESCALEDB_UNAVAILABLE" or "timescaledb" in exc.message.lower():
            return {"ok": None, "detail": "skipped: the database does not use TimescaleDB"}
        result.fail(exc)
        return {"ok": False, "detail": exc.message}
    if checked.error is not None:
        result.fail(checked.error)
    return {
        "ok": checked.ok,
        "detail": f"{checked.checked} declared items" + ("" if checked.ok else f", {len(checked.drift)} drifted"),
    }
