"""The four services as data, derived from Settings. No Docker calls here.

Each ServiceSpec carries everything `up` needs to create its container and
everything `compose render` needs to write the same stack as a compose file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from qbctl.config.settings import Settings
from qbctl.config.sizes import pg_size, redis_size
from qbctl.engine.labels import LABEL_PROJECT
from qbctl.errors import NotAProject

SERVICES = ("postgres", "redis", "adminer", "redis-commander")
UI_SERVICES = ("adminer", "redis-commander")
UI_CPU_SHARES = 256  # the UIs yield the two cores to PostgreSQL's initdb (default weight is 1024)
PROFILES = ("development", "production")
RESTART = {"development": "unless-stopped", "production": "always"}
LOOPBACK = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Port:
    container: int
    host_ip: str
    host: int
    setting: str  # the setting that moves this port


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    image_setting: str
    command: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    ports: tuple[Port, ...]
    volumes: tuple[tuple[str, str], ...]  # (volume name, mount path)
    mem_limit: int
    mem_setting: str
    probe: str  # postgres | redis | http
    ui: bool = False
    depends_on: tuple[str, ...] = ()
    stop_signal: str | None = None
    healthcheck: tuple[str, ...] = ()
    cpu_shares: int | None = None
    shm_size: str | None = None
    labels: tuple[tuple[str, str], ...] = field(default=())
    restart: str = "unless-stopped"  # the engine's restart policy ("always" in the production profile)

    def config_hash(self) -> str:
        """Changes whenever the container would have to be created differently."""
        data = asdict(self)
        data.pop("labels")
        if data["restart"] == "unless-stopped":
            data.pop("restart")  # the policy before profiles existed: such containers are not recreated
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stack:
    project: str
    network: str
    services: tuple[ServiceSpec, ...]
    external: tuple[tuple[str, str], ...] = ()  # (service, why it is not run here)
    profile: str = "development"

    def container_name(self, service: str) -> str:
        return f"{self.project}-{service}"

    def get(self, name: str) -> ServiceSpec:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def volumes(self) -> list[str]:
        return sorted({v for s in self.services for v, _ in s.volumes})


def scheduler_databases(settings: Settings) -> tuple[str, ...]:
    """The databases TimescaleDB runs a job scheduler for on the stack's server, as the TimescaleDB image
    makes it: at its first start it creates the extension in `postgres`, in `template1` (a template gets
    no scheduler) and in POSTGRES_DB (DATABASE_URL's database). Each scheduler holds one of
    timescaledb.max_background_workers for as long as the server runs."""
    return tuple(dict.fromkeys(("postgres", settings.pg.dbname)))


def postgres_args(settings: Settings) -> dict[str, str]:
    """Every server setting that decides PostgreSQL's memory, passed on the command line (which wins
    over postgresql.conf), so nothing an image writes there at its first start changes the budget."""
    parallel = settings.values.postgres_max_parallel_workers
    shared = settings.values.postgres_shared_buffers
    return {
        "shared_buffers": pg_size(shared),
        "work_mem": pg_size(settings.values.postgres_work_mem),
        "max_connections": str(settings.values.postgres_max_connections),
        "maintenance_work_mem": pg_size(settings.values.postgres_maintenance_work_mem),
        "autovacuum_max_workers": str(settings.values.postgres_autovacuum_max_workers),
        "max_parallel_workers_per_gather": str(parallel),
        "max_parallel_workers": str(parallel),
        "max_parallel_maintenance_workers": "0",
        # TimescaleDB's workers and the parallel ones, plus the logical replication launcher.
        "max_worker_processes": str(settings.values.timescaledb_max_background_workers + parallel + 2),
        "wal_buffers": pg_size(min(16 * 2**20, max(64 * 1024, shared // 32))),  # what -1 gives, made visible
        "hash_mem_multiplier": "2",  # PostgreSQL 15's default, made visible: the budget counts it
        "temp_buffers": "8MB",
        "timescaledb.max_background_workers": str(settings.values.timescaledb_max_background_workers),
        "timescaledb.telemetry_level": "off",  # no network here; the telemetry job would show Failed
    }


def build_stack(settings: Settings, profile: str | None = None) -> Stack:
    """The stack of a profile (QBCTL_PROFILE unless given): development, or production (no UIs,
    restart policy `always`, ports on the host's loopback only; the budget's memory limits as always)."""
    project = settings.project
    profile = profile or settings.values.qbctl_profile
    bind, ui_bind = settings.values.qbctl_bind_address, settings.values.qbctl_ui_bind_address
    if profile == "production" and bind not in LOOPBACK:
        from qbctl.errors import ConfigError

        raise ConfigError(
            f"QBCTL_BIND_ADDRESS={bind}: the production profile publishes PostgreSQL and Redis on the "
            "host's loopback only",
            hint="set QBCTL_BIND_ADDRESS=127.0.0.1 (the backend on the VM "
            "connects there; from elsewhere use an ssh tunnel)",
        )
    restart = RESTART[profile]
    pg, rd = settings.pg, settings.redis
    redis_auth = (("REDISCLI_AUTH", rd.password),) if rd.password else ()
    labels = ((LABEL_PROJECT, project),)
    pg_args = postgres_args(settings)
    postgres = ServiceSpec(
        name="postgres",
        image=settings.values.qbctl_postgres_image,
        image_setting="QBCTL_POSTGRES_IMAGE",
        command=("postgres", *[a for k, v in pg_args.items() for a in ("-c", f"{k}={v}")]),
        environment=(
            ("POSTGRES_USER", pg.user),
            ("POSTGRES_PASSWORD", pg.password),
            ("POSTGRES_DB", pg.dbname),
            ("PGDATA", "/var/lib/postgresql/data"),
            # qbctl mounts nothing at /docker-entrypoint-initdb.d, so the TimescaleDB image runs its
            # own two scripts there at the first start: 000 creates the extension in postgres,
            # template1 and POSTGRES_DB (two schedulers from then on: scheduler_databases) and writes
            # telemetry_level=basic (the command line says off); 001 would run timescaledb-tune and
            # write memory settings sized from the container's limit into postgresql.conf, skipped
            # under NO_TS_TUNE (and the command line, which wins, decides every one of them anyway).
            ("NO_TS_TUNE", "true"),
            # glibc keeps freed sorts, hashes and decompressed batches in the heap once a large
            # block was freed (its mmap threshold grows to it); a fixed threshold gives every
            # block of 128 kB or more back to the kernel when the query ends (musl does so anyway).
            ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ),
        ports=(Port(5432, bind, pg.port, "DATABASE_URL"),),
        volumes=((f"{project}_pgdata", "/var/lib/postgresql/data"),),
        mem_limit=settings.values.qbctl_budget_postgres,
        mem_setting="QBCTL_BUDGET_POSTGRES",
        probe="postgres",
        stop_signal="SIGINT",  # fast shutdown, as the official image does
        healthcheck=("CMD", "pg_isready", "-q", "-h", "127.0.0.1", "-U", pg.user, "-d", pg.dbname),
        labels=labels,
        restart=restart,
    )
    redis_cmd = [
        "redis-server",
        "--maxmemory",
        redis_size(settings.values.redis_max_memory),
        "--maxmemory-policy",
        settings.values.redis_maxmemory_policy,
    ]
    if rd.password:
        redis_cmd += ["--requirepass", rd.password]
    redis = ServiceSpec(
        name="redis",
        image=settings.values.qbctl_redis_image,
        image_setting="QBCTL_REDIS_IMAGE",
        command=tuple(redis_cmd),
        environment=redis_auth,
        ports=(Port(6379, bind, rd.port, "REDIS_URL"),),
        volumes=((f"{project}_redisdata", "/data"),),
        mem_limit=settings.values.qbctl_budget_redis,
        mem_setting="QBCTL_BUDGET_REDIS",
        probe="redis",
        healthcheck=("CMD", "redis-cli", "ping"),
        labels=labels,
        restart=restart,
    )
    adminer = ServiceSpec(
        name="adminer",
        image=settings.values.qbctl_adminer_image,
        image_setting="QBCTL_ADMINER_IMAGE",
        command=(),
        environment=(("ADMINER_DEFAULT_SERVER", "postgres"),),
        ports=(Port(8080, ui_bind, settings.values.qbctl_adminer_port, "QBCTL_ADMINER_PORT"),),
        volumes=(),
        mem_limit=settings.values.qbctl_adminer_memory,
        mem_setting="QBCTL_ADMINER_MEMORY",
        probe="http",
        ui=True,
        depends_on=("postgres",),
        cpu_shares=UI_CPU_SHARES,
        labels=labels,
    )
    redis_host = f"local:redis:6379:{rd.db}" + (f":{rd.password}" if rd.password else "")
    commander = ServiceSpec(
        name="redis-commander",
        image=settings.values.qbctl_redis_commander_image,
        image_setting="QBCTL_REDIS_COMMANDER_IMAGE",
        command=(),
        environment=(("REDIS_HOSTS", redis_host),),
        ports=(Port(8081, ui_bind, settings.values.qbctl_redis_commander_port, "QBCTL_REDIS_COMMANDER_PORT"),),
        volumes=(),
        mem_limit=settings.values.qbctl_redis_commander_memory,
        mem_setting="QBCTL_REDIS_COMMANDER_MEMORY",
        probe="http",
        ui=True,
        depends_on=("redis",),
        cpu_shares=UI_CPU_SHARES,
        labels=labels,
    )
    services, external = [], []
    for spec, url, key in ((postgres, pg, "DATABASE_URL"), (redis, rd, "REDIS_URL")):
        if url.is_local:
            services.append(spec)
        else:
            external.append((spec.name, f"{key} points to {url.host}, not this machine"))
    if profile != "production":
        services += [s for s in (adminer, commander) if all(d in {x.name for x in services} for d in s.depends_on)]
    return Stack(project, f"{project}_default", tuple(services), tuple(external), profile)


def with_volume(stack: Stack, service: str, volume: str) -> Stack:
    """The stack with a service's data volume replaced (PostgreSQL on the volume an upgrade made)."""
    services = tuple(
        replace(s, volumes=((volume, s.volumes[0][1]), *s.volumes[1:])) if s.name == service else s
        for s in stack.services
    )
    return replace(stack, services=services)


def exposure_warnings(settings: Settings) -> list[str]:
    """What a port published beyond loopback exposes, said before it happens."""
    out = []
    loopback = LOOPBACK
    if settings.values.qbctl_bind_address not in loopback and settings.redis.is_local and not settings.redis.password:
        out.append(
            f"Redis is published on {settings.values.qbctl_bind_address} and has no password: anyone who can "
            "reach this host can read and change it (put a password in REDIS_URL: redis://:PASSWORD@...)"
        )
    if settings.values.qbctl_ui_bind_address not in loopback:
        out.append(
            f"Adminer and Redis Commander are published on {settings.values.qbctl_ui_bind_address}; Redis "
            "Commander has no login"
        )
    return out


def select(stack: Stack, names: list[str] | None, no_ui: bool) -> list[ServiceSpec]:
    """The services a command acts on, in start order (critical path first).

    Naming a UI brings the service it depends on, as `docker compose up adminer` does.
    """
    from qbctl.errors import UsageError

    known = {s.name for s in stack.services}
    wanted = set(names or known)
    for n in wanted:
        if n not in SERVICES:
            raise UsageError(f"unknown service {n!r}", hint="choose from " + ", ".join(SERVICES))
        if n not in known:
            why = dict(stack.external).get(n) or (
                "the production profile runs no UIs"
                if stack.profile == "production"
                else "it depends on a service that is not run here"
            )
            raise UsageError(f"service {n!r} is not run by qbctl here: {why}")
    for s in stack.services:
        if s.name in wanted:
            wanted.update(s.depends_on)
    if no_ui:
        wanted -= set(UI_SERVICES)
    return [s for s in stack.services if s.name in wanted]


def require_project(settings: Settings, nothing_done: str) -> None:
    """Commands that create or remove containers act only in a project (settings.find_project), so
    that a command run in the wrong folder cannot start a second stack named after that folder."""
    if not settings.is_project:
        raise NotAProject(
            f"{settings.root} is no qbctl project (no .env, sql/schema or [tool.qbctl] in "
            f"pyproject.toml there or above it), so {nothing_done}; run qbctl in the project's "
            "folder, or name it with --project-dir DIR or --project NAME"
        )
