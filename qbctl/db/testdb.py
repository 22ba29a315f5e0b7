"""Databases of their own for tests (the PostgreSQL half of the pytest plugin): a template per
schema, a clone of it per test.

- **The template**: the project's sql/ (the files `db migrate` applies, through migrate's own
  code) migrated into a database of its own, its TimescaleDB jobs paused, then marked a template
  (`datistemplate`) that accepts no connections, so that no TimescaleDB scheduler can hold it
  (timescale/timescaledb#4048, #9080: `CREATE DATABASE ... TEMPLATE` fails while one is connected).
  The extension is created and the database's scheduler stopped *before* the migration runs, so no
  policy job ever runs in the template: every clone starts as `db migrate` leaves a database in the
  instant before its first job (no job statistics, no refreshed aggregate), whatever the timing.
- **Its name** carries the checksum of what went into it (each file's name and rendered text,
  `--without-timescaledb`, the server's TimescaleDB version, FORMAT): a change of any of them is a
  new template, built once; the same files find the one built before, on any later run.
- **Clones**: `CREATE DATABASE ... TEMPLATE ... STRATEGY` (see STRATEGY), made ahead by a thread
  of the session so that a test rarely waits, and dropped `WITH (FORCE)` by that thread after it.
- **Names and labels**: every database made here has a name with one of the prefixes below and a
  `COMMENT ON DATABASE` starting with MARK that says what it is and which session made it. Nothing
  without both is ever changed or dropped.
- **Leftovers**: each session holds a session-level advisory lock with a random key of its own for
  as long as it lives; its clones and builds carry the key in their name and label. A database
  whose key no session holds (pg_locks, any database) was left by a killed run: the next session
  drops it. Templates are kept (the newest KEEP_TEMPLATES, and any a live session uses: it holds a
  shared advisory lock of the template's own).
- **Parallel**: one build per checksum (an advisory lock; the other sessions wait for it), made
  under a build name and renamed into place together with its label in one transaction, so a
  template's name always means a whole template.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db import connect, files
from qbctl.errors import ConfigError, NotOwned, QbctlError, TimescaleMissing, Unavailable, UsageError
from qbctl.events import Event, Events, Status, ignore

if TYPE_CHECKING:
    from psycopg import Connection

    from qbctl.engine.runtime import Runtime

FORMAT = 1  # what a template is made of, beyond the files: bump when the making changes
MARK = "qbctl-testdb"
TEMPLATE, BUILD, CLONE = "qbctl_tpl_", "qbctl_tplb_", "qbctl_t_"
NAMES = re.compile(r"^qbctl_(tpl|tplb|t)_([0-9a-f]{16})(?:_([0-9a-f]{16}|[0-9]+))?$")
KEEP_TEMPLATES = 3  # beyond these (newest first), a template no live session uses is dropped
BUILD_WAIT = 600.0  # seconds a session waits for another's template build
# How a clone is copied (PostgreSQL 15+; older servers have FILE_COPY only). Measured on the QB schema
# with TimescaleDB (bench/testdb.py, docs/benchmarks.md): see there for the figures behind the choice.
STRATEGY = "FILE_COPY"
STRATEGIES = ("FILE_COPY", "WAL_LOG")
DROP_CONNECTION_ROOM = 6  # free connections a session wants before it takes a second one for its drops
NO_CREATEDB_HINT = (
    "the test databases are clones of a template: a superuser can grant it with "
    "ALTER ROLE {user} CREATEDB, or point DATABASE_URL at a user that has it"
)

LIST_SQL = (
    r"SELECT datname, coalesce(shobj_description(oid, 'pg_database'), ''), datistemplate FROM pg_database"
    r" WHERE datname ~ '^qbctl_(tpl|tplb|t)_'"
)
HELD_SQL = (
    "SELECT DISTINCT (classid::bigint << 32) | objid::bigint FROM pg_locks"
    " WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
)


@dataclass(frozen=True)
class Label:
    """What a database made here is: the text of its COMMENT ON DATABASE (after MARK)."""

    kind: str  # template | building | clone
    owner: str  # the session key, 16 hex digits ("" for a template: sessions share it)
    checksum: str = ""  # template and building: what went into it
    created: float = 0.0
    seeded: str = ""  # a seeded template: what was seeded ("" for the schema alone)
    host: str = ""  # where the session ran, for people reading pg_database
    pid: int = 0

    def text(self) -> str:
        return f"{MARK} " + json.dumps(dataclasses.asdict(self), separators=(",", ":"))


def parse_label(comment: str) -> Label | None:
    """The label in a database's comment; None when it is no label of ours."""
    if not comment.startswith(MARK + " "):
        return None
    try:
        data = json.loads(comment[len(MARK) + 1 :])
        return Label(**{f.name: data[f.name] for f in dataclasses.fields(Label) if f.name in data})
    except (ValueError, TypeError, KeyError):
        return None


def _schema(conn) -> str:
    """TimescaleDB's schema, quoted, for the calls of its functions (a search_path may leave it out)."""
    from qbctl.db import timescale

    return timescale.extension_schema(connect.psycopg_rows(conn))


def literal(text: str) -> str:
    """A string literal for a utility statement (COMMENT takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def key_of(owner: str) -> int:
    return int(owner, 16)


def derived_key(text: str) -> int:
    """A 63-bit advisory lock key for a name (a template's use, its build)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def checksum(sql: list[files.SqlFile], without_timescaledb: bool, timescaledb: str | None, seeded: str = "") -> str:
    """What decides a template's content: each file's kind, name and rendered text (its checksum),
    the flag, the server's TimescaleDB version, the seed, FORMAT."""
    parts = [
        f"format={FORMAT}",
        f"without_timescaledb={without_timescaledb}",
        f"timescaledb={timescaledb}",
        f"seeded={seeded}",
    ]
    parts += [f"{f.kind}/{f.name}={f.checksum}" for f in sql]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def with_database(settings: Settings, dbname: str) -> Settings:
    """The settings with DATABASE_URL naming another database on the same server (for migrate, seed)."""
    pg = dataclasses.replace(settings.pg, dbname=dbname)
    return dataclasses.replace(settings, values=dataclasses.replace(settings.values, database_url=pg))


def url(settings: Settings, dbname: str, *, rt: Runtime) -> str:
    """A database's URL as this process reaches it (the stack's host and port through `rt`'s reach), the
    credentials and libpq parameters of DATABASE_URL."""
    dsn = connect.dsn(with_database(settings, dbname), rt=rt)
    return dsn


@dataclass(frozen=True)
class Found:
    name: str
    label: Label | None
    is_template: bool


@dataclass
class SweepResult:
    dropped: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)  # ours, in use


def leftovers(found: list[Found], held: set[int]) -> tuple[list[Found], list[Found]]:
    """(dead, unlabelled) among the databases named like ours. Pure.

    dead: labelled clones and builds whose session key no session holds, and templates beyond the
    newest KEEP_TEMPLATES that no session uses. unlabelled: named like a clone or build of a dead
    session but without a label (a run killed between CREATE DATABASE and its COMMENT): the caller
    checks inside them before it touches one."""
    dead, unlabelled, templates = [], [], []
    for f in found:
        m = NAMES.match(f.name)
        if not m:
            continue
        kind, first, second = m.groups()
        if kind == "tpl":
            if f.label and f.label.kind == "template":
                templates.append(f)
            continue
        owner = first if kind == "t" else (second or "")
        if not owner or key_of(owner) in held:
            continue
        if f.label and f.label.owner == owner and f.label.kind in ("clone", "building"):
            dead.append(f)
        elif f.label is None:
            unlabelled.append(f)
    templates.sort(key=lambda f: f.label.created if f.label else 0.0, reverse=True)  # all labelled (above)
    for f in templates[KEEP_TEMPLATES:]:
        if f.label and derived_key("use:" + f.label.checksum) not in held:
            dead.append(f)
    return dead, unlabelled


class Session:
    """One pytest session's (or xdist worker's) use of the server of DATABASE_URL.

    Its control connection (to DATABASE_URL's own database) holds the session's advisory lock for
    as long as it lives and runs every CREATE and DROP DATABASE, in one thread of its own (the
    `_Cloner`), so that the session costs the server one connection."""

    def __init__(
        self,
        settings: Settings,
        *,
        without_timescaledb: bool = False,
        strategy: str | None = None,
        workers: int = 1,
        events: Events = ignore,
        rt: Runtime,
    ):
        self.settings = settings
        self.rt = rt  # the pytest plugin's: how this process reaches the server (an ssh engine's tunnel)
        self.without_timescaledb = without_timescaledb
        self.strategy = (strategy or STRATEGY).upper()
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"qb_clone_strategy = {strategy!r}: expected one of {', '.join(STRATEGIES)}",
                hint="fix qb_clone_strategy in the pytest configuration",
            )
        self.events = events
        self.owner = f"{secrets.randbits(63):016x}"
        self.conn: Connection | None = None  # the control connection (open to close)
        # a second connection for drops, when the server has connections to spare
        self.drop_conn: Connection | None = None
        self.workers = workers  # sessions of this run on the server (xdist workers)
        self.version = 0
        self.timescaledb: tuple[str | None, bool] = (None, False)  # the version available, preloaded
        self._lock = threading.Lock()  # the control connection is used by one thread at a time
        self._count = 0
        self._cloners: dict[str, _Cloner] = {}
        # What this session did, for the plugin's summary line: template -> how it was had
        # ("built" / "found" / "waited"), seconds spent; clones made and their CREATE DATABASE times.
        self.templates: dict[str, tuple[str, float]] = {}
        self.clone_seconds: list[float] = []

    # --- the session ------------------------------------------------------------------------------
    def open(self) -> SweepResult:
        self.conn = conn = connect.connect(self.settings, timeout=5, rt=self.rt)
        conn.execute("SET application_name = 'qbctl pytest plugin'")
        user, superuser, createdb, version = conn.execute(
            "SELECT current_user, rolsuper, rolcreatedb, current_setting('server_version_num')::int"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not (superuser or createdb):
            self.close()
            raise Unavailable(
                f"the user {user} of DATABASE_URL ({self.settings.pg.masked()}) may not create databases (no CREATEDB)",
                code="NO_CREATEDB",
                hint=NO_CREATEDB_HINT.format(user=user),
            )
        self.version = version
        available, preloaded = conn.execute(
            "SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
            " current_setting('shared_preload_libraries') LIKE '%timescaledb%'"
        ).fetchone()
        self.timescaledb = (available, preloaded)
        conn.execute("SELECT pg_advisory_lock(%s)", (key_of(self.owner),))
        # Drops beside the creates measured 30% less per test (docs/benchmarks.md), for one more
        # connection: taken by a session that runs alone (no xdist: its workers overlap their clones
        # anyway and would need a connection each) on a server with room for it, its tests and others.
        free = conn.execute(
            "SELECT current_setting('max_connections')::int - count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend'"
        ).fetchone()[0]
        if self.workers == 1 and free >= DROP_CONNECTION_ROOM:
            self.drop_conn = connect.connect(self.settings, timeout=5, rt=self.rt)
        return self.sweep()

    def close(self) -> None:
        for cloner in list(self._cloners.values()):
            cloner.stop()
        self._cloners.clear()
        if self.drop_conn is not None:
            self.drop_conn.close()
            self.drop_conn = None
        if self.conn is not None:
            self.conn.close()  # the advisory locks go with it
            self.conn = None

    def _control(self) -> Connection:
        if self.conn is None:
            raise RuntimeError("Session.open() first")
        return self.conn

    def _sql(self, sql: str, params=None):
        with self._lock:
            return self._control().execute(sql, params)

    def label(self, kind: str, **fields) -> Label:
        return Label(
            kind, self.owner, created=round(time.time(), 3), host=socket.gethostname(), pid=os.getpid(), **fields
        )

    # --- leftovers --------------------------------------------------------------------------------
    def found(self) -> list[Found]:
        return [Found(n, parse_label(c), t) for n, c, t in self._sql(LIST_SQL).fetchall()]

    def sweep(self) -> SweepResult:
        """Drop what killed runs left (their sessions hold no lock) and templates beyond the newest few."""
        result = SweepResult()
        held = {r[0] for r in self._sql(HELD_SQL).fetchall()}
        dead, unlabelled = leftovers(self.found(), held)
        for f in unlabelled:
            if self._clone_inside(f.name):
                dead.append(f)
        for f in dead:
            try:
                self._drop(f.name, template=f.is_template)
                result.dropped.append(f.name)
            except QbctlError:
                result.kept.append(f.name)  # another session's sweep, or it came into use: left alone
        return result

    def _clone_inside(self, name: str) -> bool:
        """Whether an unlabelled database named like ours holds the mark every template carries
        inside (the comment of its qbctl schema): then it is a clone or build a killed run left
        before it could label it."""
        import psycopg

        try:
            with connect.connect(with_database(self.settings, name), timeout=5, rt=self.rt) as conn:
                row = conn.execute("SELECT obj_description(to_regnamespace('qbctl'), 'pg_namespace')").fetchone()
        except (QbctlError, psycopg.Error):
            return False
        return bool(row and row[0] and row[0].startswith(MARK))

    def _drop(self, name: str, template: bool = False) -> None:
        import psycopg

        try:
            if template:
                self._sql(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
            self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            raise Unavailable(
                f"could not drop the test database {name}: {' '.join(str(exc).split())[:200]}",
                code="DATABASE_UNAVAILABLE",
            ) from None

    # --- the template -----------------------------------------------------------------------------
    def template(self, seed: tuple[int, int] | None = None) -> str:
        """The ready template for the project's files (built when none is, or waited for while another
        session builds it); with `seed` (symbols, days), a template with `db seed`'s data on top."""
        sql = files.load(self.settings)
        tsdb = self._timescaledb_for(sql)
        seeded = f"{seed[0]}x{seed[1]}@{time.strftime('%Y-%m-%d', time.gmtime())}" if seed else ""
        sum_ = checksum(sql, self.without_timescaledb, tsdb, seeded)
        name = TEMPLATE + sum_[:16]
        self._sql("SELECT pg_advisory_lock_shared(%s)", (derived_key("use:" + sum_),))  # in use: kept by sweeps
        if self._ready(name):
            self.templates.setdefault(name, ("found", 0.0))
            return name
        base = self.template() if seed else None
        t0 = time.monotonic()
        how = self._build(name, sum_, tsdb, base, seed, seeded)
        self.templates[name] = (how, round(time.monotonic() - t0, 3))
        return name

    def _timescaledb_for(self, sql: list[files.SqlFile]) -> str | None:
        """The TimescaleDB version the template will have; TIMESCALEDB_UNAVAILABLE (with the plugin's way
        around it) when the files need it and the server has none."""
        available, preloaded = self.timescaledb
        if self.without_timescaledb or not any(f.needs_timescaledb for f in sql):
            return None
        if available and preloaded:
            return available
        why = (
            "does not have the timescaledb extension"
            if not available
            else "has timescaledb installed but not in shared_preload_libraries"
        )
        raise TimescaleMissing(
            f"the server of DATABASE_URL ({self.settings.pg.masked()}) {why}; the test template needs it for sql/",
            hint="use a server with TimescaleDB (the stack "
            "`qbctl up` starts), or run pytest with --qb-without-timescaledb (ini: "
            "qb_without_timescaledb = true) for the plain schema without hypertables and "
            "policies",
        )

    def _ready(self, name: str) -> bool:
        row = self._sql(
            "SELECT datistemplate, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database"
            " WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is None:
            return False
        label = parse_label(row[1])
        if not (row[0] and label and label.kind == "template"):
            raise NotOwned(
                f"a database named {name} exists and is not a qbctl test template: left alone",
                hint="rename or drop it yourself; qbctl touches only the databases it labelled",
            )
        return True

    def _build(
        self, name: str, sum_: str, tsdb: str | None, base: str | None, seed: tuple[int, int] | None, seeded: str
    ) -> str:
        """Build the template, or wait for another session's build of it: "built" or "waited"."""
        key = derived_key("build:" + sum_)
        deadline = time.monotonic() + BUILD_WAIT
        told = False
        while not self._sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if self._ready(name):
                return "waited"
            if not told:
                self.events(
                    Event(Status.WAITING, f"another session is building the test template {name}; waiting for it")
                )
                told = True
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"another session held the build of the test template {name} for more than {BUILD_WAIT:.0f}s",
                    code="LOCK_TIMEOUT",
                    hint="pg_locks shows the session holding it; end it and run the tests again",
                )
            time.sleep(0.1)
        build = f"{BUILD}{sum_[:16]}_{self.owner}"
        try:
            if self._ready(name):
                return "waited"
            self.events(Event(Status.WORKING, f"building the test template {name}"))
            self._create(build, self.label("building", checksum=sum_), template=base)
            settings = with_database(self.settings, build)
            if base is None or seed is None:  # (both or neither: template)
                self._migrate(settings, tsdb)
            else:
                self._seed(settings, seed, tsdb)
            with connect.connect(settings, timeout=5, rt=self.rt) as conn:
                # Compacted (the migration's catalog churn) and frozen, as template0 is: a smaller copy per clone,
                # and no clone ever needs an anti-wraparound vacuum of what it inherited.
                conn.execute("VACUUM (FULL, FREEZE, ANALYZE)")
            self._finish(build, name, self.label("template", checksum=sum_, seeded=seeded))
            return "built"
        except BaseException:
            try:
                self._drop(build)
            except QbctlError:
                pass  # the next session's sweep drops it (its owner, this session, will be gone)
            raise
        finally:
            self._sql("SELECT pg_advisory_unlock(%s)", (key,))

    def _create(self, name: str, label: Label, template: str | None = None) -> None:
        how = ""
        if template:
            how = f' TEMPLATE "{template}"' + (f" STRATEGY {self.strategy}" if self.version >= 150000 else "")
        self._sql(f'CREATE DATABASE "{name}"{how}')
        self._sql(f'COMMENT ON DATABASE "{name}" IS {literal(label.text())}')

    def _migrate(self, settings: Settings, tsdb: str | None) -> None:
        """sql/ into the build, by migrate's own code; TimescaleDB's scheduler stopped for it first."""
        from qbctl.db import migrate

        with connect.connect(settings, timeout=5, rt=self.rt) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS qbctl")  # migrate's own schema, marked inside (sweep)
            conn.execute(f"COMMENT ON SCHEMA qbctl IS {literal(MARK + ' template')}")
            if tsdb:
                # The extension's install script starts a scheduler for the database; stopped at once,
                # before any policy exists, so that no job runs while the template is built.
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                conn.execute("SELECT _timescaledb_functions.stop_background_workers()")
        options = migrate.MigrateOptions(without_timescaledb=self.without_timescaledb, wait=0)
        result = migrate.migrate(settings, options, rt=self.rt)
        if result.error is not None:
            raise result.error
        self._pause_jobs(settings)

    def _seed(self, settings: Settings, seed: tuple[int, int], tsdb: str | None) -> None:
        """db seed's data (no Redis) in a clone of the schema's template, compressed as production has
        it: the chunks older than COMPRESSION_AFTER_DAYS, by the policies' own jobs. Run here, not by seed:
        a template's jobs are paused (`_pause_jobs`), and seed leaves paused jobs alone."""
        from qbctl.db import seed as seeding

        result = seeding.seed(settings, seeding.SeedOptions(symbols=seed[0], days=seed[1], redis=False), rt=self.rt)
        if result.error is not None:
            raise result.error
        if tsdb:
            with connect.connect(settings, timeout=5, rt=self.rt) as conn:
                ts = _schema(conn)
                for (job,) in conn.execute(
                    "SELECT job_id FROM timescaledb_information.jobs"
                    " WHERE proc_name IN ('policy_compression', 'policy_columnstore')"
                    " ORDER BY job_id"
                ).fetchall():
                    conn.execute(f"CALL {ts}.run_job({int(job)})")
        self._pause_jobs(settings)

    def _pause_jobs(self, settings: Settings) -> None:
        with connect.connect(settings, timeout=5, rt=self.rt) as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
                conn.execute(
                    f"SELECT {_schema(conn)}.alter_job(job_id, scheduled => false)"
                    " FROM timescaledb_information.jobs WHERE scheduled"
                )

    def _finish(self, build: str, name: str, label: Label) -> None:
        """The build becomes the template: no connections from now on (a scheduler that the launcher
        starts again cannot connect), every session in it ended, then in one transaction marked a
        template, renamed into place and labelled."""
        import psycopg

        self._sql(f'ALTER DATABASE "{build}" ALLOW_CONNECTIONS false')
        deadline = time.monotonic() + 30
        while True:
            self._terminate(build)
            try:
                conn = self._control()
                with self._lock, conn.transaction():
                    conn.execute(f'ALTER DATABASE "{build}" IS_TEMPLATE true')
                    conn.execute(f'ALTER DATABASE "{build}" RENAME TO "{name}"')
                    conn.execute(f'COMMENT ON DATABASE "{name}" IS {literal(label.text())}')
                return
            except psycopg.errors.DuplicateDatabase:
                self._drop(build)  # another project on this server built the same template meanwhile
                if not self._ready(name):
                    raise
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _terminate(self, name: str) -> None:
        """End every session in one of our databases (a TimescaleDB scheduler, as a rule)."""
        self._sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )

    # --- clones -----------------------------------------------------------------------------------
    def clone(self, template: str) -> str:
        """A new clone of `template`, labelled; made now, by the caller's thread."""
        with self._lock:
            self._count += 1
            name = f"{CLONE}{self.owner}_{self._count}"
        self._clone_as(name, template)
        return name

    def _clone_as(self, name: str, template: str) -> None:
        import psycopg

        for attempt in range(100):
            try:
                t0 = time.monotonic()
                self._create(name, self.label("clone", checksum=template), template=template)
                self.clone_seconds.append(time.monotonic() - t0)
                return
            except psycopg.errors.ObjectInUse:
                # A session in the template (the launcher's scheduler, started again before the template
                # stopped accepting connections): ended, and the copy tried again.
                self._terminate(template)
                time.sleep(0.02 * min(attempt + 1, 10))
        raise Unavailable(
            f"the test template {template} stayed in use by another session",
            code="DATABASE_UNAVAILABLE",
            hint="pg_stat_activity shows who is connected to it",
        )

    def drop(self, name: str) -> None:
        self._drop(name)

    def drop_beside(self, name: str) -> None:
        """DROP DATABASE on the second connection (the cloner's drop thread), beside the creates."""
        import psycopg

        try:
            assert self.drop_conn is not None  # drops go beside only when it is open (_Cloner)
            self.drop_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            raise Unavailable(
                f"could not drop the test database {name}: {' '.join(str(exc).split())[:200]}",
                code="DATABASE_UNAVAILABLE",
            ) from None

    def keep_scheduler_off(self, name: str) -> None:
        """A clone that lives long (the session's) would get a TimescaleDB scheduler at the launcher's next
        poll (a minute), taking one of TIMESCALEDB_MAX_BACKGROUND_WORKERS from the stack's own database
        for the whole session although its jobs are paused: stopped for it here."""
        with connect.connect(with_database(self.settings, name), timeout=5, rt=self.rt) as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
                conn.execute("SELECT _timescaledb_functions.stop_background_workers()")

    def cloner(self, template: str) -> _Cloner:
        """The session's clone maker for `template`: clones made one ahead, dropped behind."""
        if template not in self._cloners:
            self._cloners[template] = _Cloner(self, template)
        return self._cloners[template]


class _Cloner:
    """Clones of one template, made one ahead of need and dropped after use, by threads of their own.

    The first clone is made when asked for; after that one is kept ready, so a test takes a clone
    made while the test before it ran, and its own is dropped while the next one runs. Drops run on
    a second connection of their own, beside the creates, when the server's connections allow it
    (Session.drop_conn); else they take turns with the creates on the control connection. The
    threads' errors (the server gone, say) are raised in the test that asks next."""

    def __init__(self, session: Session, template: str):
        self.session, self.template = session, template
        self.ready: queue.Queue = queue.Queue()
        self.work: queue.Queue = queue.Queue()
        self.drops: queue.Queue | None = queue.Queue() if session.drop_conn is not None else None
        self.threads = [threading.Thread(target=self._run, name=f"qbctl-cloner-{template}", daemon=True)]
        if self.drops is not None:
            self.threads.append(threading.Thread(target=self._drop_all, name=f"qbctl-dropper-{template}", daemon=True))
        for thread in self.threads:
            thread.start()
        self.ahead = False  # a clone has been asked for ahead of need

    def take(self) -> str:
        if not self.ahead:
            self.work.put(("create", None))
        item = self.ready.get()
        if isinstance(item, BaseException):
            self.ahead = False
            raise item
        self.work.put(("create", None))  # the next test's
        self.ahead = True
        return item

    def give_back(self, name: str) -> None:
        if self.drops is not None:
            self.drops.put(name)
        else:
            self.work.put(("drop", name))

    def stop(self) -> None:
        """Wait for the drops, drop the clone made ahead, end the threads."""
        self.work.put(("stop", None))
        self.threads[0].join()
        if self.drops is not None:
            self.drops.put(None)
            self.threads[1].join()

    def _run(self) -> None:
        pending: list[str] = []
        while True:
            op, name = self.work.get()
            if op == "drop":
                pending.append(name)
            elif op == "create":
                try:
                    self.ready.put(self.session.clone(self.template))
                except BaseException as exc:  # noqa: BLE001 - handed to the test that asks next
                    self.ready.put(exc)
            elif op == "stop":
                while not self.ready.empty():
                    item = self.ready.get()
                    if isinstance(item, str):
                        pending.append(item)
                if self.drops is not None:
                    for doomed in pending:
                        self.drops.put(doomed)
                    return
            # Drops after the create a test may be waiting for, one per turn, all of them at the end.
            while pending and (op == "stop" or self.work.empty()):
                self._drop(pending.pop(0), self.session.drop)
                if op != "stop":
                    break
            if op == "stop":
                return

    def _drop_all(self) -> None:
        assert self.drops is not None  # this thread runs only with a queue of drops
        while (doomed := self.drops.get()) is not None:
            self._drop(doomed, self.session.drop_beside)

    @staticmethod
    def _drop(name: str, how) -> None:
        try:
            how(name)
        except QbctlError:
            pass  # left for the next session's sweep (this session's key dies with it)


JOB_KINDS = {
    "compression": ("policy_compression", "policy_columnstore"),
    "retention": ("policy_retention",),
    "refresh": ("policy_refresh_continuous_aggregate",),
}
JOBS_SQL = (
    "SELECT job_id, proc_name, coalesce(hypertable_schema || '.' || hypertable_name, '') FROM"
    " timescaledb_information.jobs WHERE proc_name LIKE 'policy%' AND proc_name NOT IN"
    " ('policy_telemetry', 'policy_job_stat_history_retention') ORDER BY job_id"
)


def pick_jobs(jobs: list[tuple[int, str, str]], relation: str | None, kind: str | None) -> list[int]:
    """The ids of the policy jobs on `relation` (a hypertable or continuous aggregate, with or without
    its schema) and of `kind` (compression, retention, refresh); CheckFailed naming the jobs there are
    when none matches, so that a typo is no silent no-op. Pure."""
    if kind is not None and kind not in JOB_KINDS:
        raise UsageError(f"job kind {kind!r}: expected one of {', '.join(JOB_KINDS)}")
    picked = [
        job
        for job, proc, rel in jobs
        if (kind is None or proc in JOB_KINDS[kind]) and (relation is None or relation in (rel, rel.split(".", 1)[-1]))
    ]
    if not picked:
        there = ", ".join(f"{_kind(proc)} on {rel.split('.', 1)[-1]}" for _, proc, rel in jobs) or "none"
        what = " ".join(x for x in (kind, "job", f"on {relation}" if relation else "") if x)
        raise UsageError(f"no TimescaleDB policy {what} in this database (its jobs: {there})")
    return picked


def _kind(proc: str) -> str:
    return next((k for k, procs in JOB_KINDS.items() if proc in procs), proc)


def run_jobs(database_url: str, relation: str | None = None, kind: str | None = None) -> list[int]:
    """Run the policy jobs of `relation` and/or `kind` now, in the database of `database_url` (a
    clone's jobs are paused: they run when a test says so). Their ids, in the order they ran."""
    with connect.connect_url(database_url) as conn:
        ids = pick_jobs([(int(j), p, r) for j, p, r in conn.execute(JOBS_SQL).fetchall()], relation, kind)
        ts = _schema(conn)
        for job in ids:
            conn.execute(f"CALL {ts}.run_job({job})")
    return ids
