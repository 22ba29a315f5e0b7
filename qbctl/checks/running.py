"""The values the budget's model takes: the settings' (the configuration the next `qbctl up`
applies), what a running server fills in (only what the settings do not decide), the values as they
run now, and each difference between what runs and the settings. Pure but for the one reader
(`read_pg`); `budget.measure` reads Redis and the containers.

Decided by the settings: every value qbctl passes on PostgreSQL's command line (stack.spec.postgres_args:
the command line wins over postgresql.conf), Redis's maxmemory and policy, each container's memory
limit. Not decided by them, so read from a running server: superuser_reserved_connections,
autovacuum_work_mem, max_wal_senders (PostgreSQL's defaults otherwise), the shared memory no setting
sizes (model.SHARED_FIXED otherwise), the TimescaleDB schedulers that run (the image's two otherwise),
a value set for the database or its user (ALTER ... SET, which wins over the command line for the
backend's sessions), whether Redis saves in the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from qbctl.checks import model
from qbctl.config.settings import Settings
from qbctl.config.sizes import MB
from qbctl.errors import QbctlError

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

# PostgreSQL's values the settings decide: those qbctl passes on the server's command line
# (stack.spec.postgres_args; the command line wins over postgresql.conf), with the setting that
# changes each (None: qbctl's own fixed value).
PG_DECIDED = {
    "shared_buffers": "POSTGRES_SHARED_BUFFERS",
    "wal_buffers": "POSTGRES_SHARED_BUFFERS",
    "work_mem": "POSTGRES_WORK_MEM",
    "hash_mem_multiplier": None,
    "maintenance_work_mem": "POSTGRES_MAINTENANCE_WORK_MEM",
    "autovacuum_max_workers": "POSTGRES_AUTOVACUUM_MAX_WORKERS",
    "max_connections": "POSTGRES_MAX_CONNECTIONS",
    "max_parallel_workers_per_gather": "POSTGRES_MAX_PARALLEL_WORKERS",
    "max_parallel_workers": "POSTGRES_MAX_PARALLEL_WORKERS",
    "max_worker_processes": "TIMESCALEDB_MAX_BACKGROUND_WORKERS",
    "temp_buffers": None,
    "timescaledb.max_background_workers": "TIMESCALEDB_MAX_BACKGROUND_WORKERS",
}
# What they do not decide, with PostgreSQL's defaults until a running server says otherwise.
PG_SERVER_DECIDES = {"superuser_reserved_connections": 3, "autovacuum_work_mem": -1, "max_wal_senders": 10}
# A setting made inside the data (ALTER ROLE / ALTER DATABASE ... SET) wins over the command line for
# the backend's sessions, and no `qbctl up` changes it.
PG_IN_DATA = {"database", "user", "database user"}
REDIS_DECIDED = {"maxmemory": "REDIS_MAX_MEMORY", "maxmemory-policy": "REDIS_MAXMEMORY_POLICY"}
SHARES = {"postgres": "QBCTL_BUDGET_POSTGRES", "redis": "QBCTL_BUDGET_REDIS"}  # each container's memory limit
_UNITS = {"8kB": 8192, "kB": 1024, "MB": MB, "B": 1, None: 1, "": 1}


@dataclass(frozen=True)
class PgReading:
    """A running PostgreSQL's own word: pg_settings (in bytes and counts, with each value's source)
    and the shared memory it allocated (the sum of pg_shmem_allocations)."""

    values: dict[str, float]
    sources: dict[str, str]
    allocated: int | None = None
    schedulers: int = 0  # TimescaleDB's job schedulers running (pg_stat_activity): one per database with it

    @classmethod
    def from_rows(cls, rows: list[tuple], allocated: int | None, schedulers: int = 0) -> PgReading:
        """From `SELECT name, setting, unit, source FROM pg_settings`. Pure."""
        values, sources = {}, {}
        for name, setting, unit, source in rows:
            number = float(setting)
            values[name] = number * _UNITS.get(unit, 1) if number >= 0 else number
            sources[name] = source
        return cls(values, sources, allocated, schedulers)

    @property
    def has_timescaledb(self) -> bool:
        """Its image loads TimescaleDB (whose settings pg_settings lists only once the library is loaded)."""
        return TSDB_WORKERS in self.values

    def in_data(self) -> list[str]:
        """The decided values that the data overrides for the backend's sessions."""
        return [n for n in PG_DECIDED if n in self.values and self.sources.get(n) in PG_IN_DATA]


@dataclass
class Running:
    """What runs, as read by `measure`: each server's values, each container's memory limit, and
    whether the next `qbctl up` recreates the container (its settings changed; None: not known)."""

    pg: PgReading | None = None
    redis_config: dict | None = None
    limits: dict[str, int] = field(default_factory=dict)
    recreated: dict[str, bool | None] = field(default_factory=dict)


def _arg_value(text: str) -> float:
    from qbctl.config.sizes import parse_size

    return float(parse_size(text)) if text[-1:] == "B" else float(text)


def pg_settings_values(s: Settings) -> dict[str, float]:
    """The decided values as the next `up` passes them (stack.spec.postgres_args), in bytes and counts."""
    from qbctl.stack.spec import postgres_args

    args = postgres_args(s)
    return {name: _arg_value(args[name]) for name in PG_DECIDED}


TSDB_WORKERS = "timescaledb.max_background_workers"


def schedulers(s: Settings, reading: PgReading | None = None) -> int:
    """TimescaleDB's job schedulers, each holding one of its background workers: those a running server
    counts; else (none counted yet) those the image makes, for `postgres` and DATABASE_URL's database
    (stack.spec.scheduler_databases). Pure."""
    from qbctl.stack.spec import scheduler_databases

    return reading.schedulers if reading and reading.schedulers else len(scheduler_databases(s))


def _pg(v: dict[str, float], backend: int, fixed: int, schedulers: int) -> model.PgValues:
    i = {k: int(x) for k, x in v.items()}
    return model.PgValues(
        shared_buffers=i["shared_buffers"],
        wal_buffers=i["wal_buffers"],
        work_mem=i["work_mem"],
        hash_mem_multiplier=v["hash_mem_multiplier"],
        maintenance_work_mem=i["maintenance_work_mem"],
        autovacuum_work_mem=i["autovacuum_work_mem"],
        autovacuum_max_workers=i["autovacuum_max_workers"],
        max_connections=i["max_connections"],
        superuser_reserved_connections=i["superuser_reserved_connections"],
        max_parallel_workers_per_gather=i["max_parallel_workers_per_gather"],
        max_parallel_workers=i["max_parallel_workers"],
        max_worker_processes=i["max_worker_processes"],
        temp_buffers=i["temp_buffers"],
        tsdb_background_workers=i[TSDB_WORKERS],
        backend=backend,
        max_wal_senders=i["max_wal_senders"],
        shared_fixed=fixed,
        schedulers=schedulers,
    )


def pg_values(s: Settings, reading: PgReading | None = None) -> model.PgValues:
    """The configuration the next `up` applies: the settings' values; for what they do not decide, the
    running server's (PostgreSQL's defaults when none runs), and its shared memory no setting sizes. Pure."""
    v: dict[str, float] = {**PG_SERVER_DECIDES, **pg_settings_values(s)}
    fixed = model.SHARED_FIXED
    if reading:
        v.update({n: reading.values[n] for n in PG_SERVER_DECIDES if n in reading.values})
        v.update({n: reading.values[n] for n in reading.in_data()})
        if not reading.has_timescaledb:  # the image decides that; with none running, its workers are counted
            v[TSDB_WORKERS] = 0
        fixed = running_pg_values(reading, s).shared_fixed
    return _pg(v, s.values.qbctl_postgres_backend_overhead, fixed, schedulers(s, reading))


def running_pg_values(reading: PgReading, s: Settings) -> model.PgValues:
    """The configuration as it runs now: every value the server's (what `--load` measures). Pure."""
    v: dict[str, float] = {**PG_SERVER_DECIDES, **pg_settings_values(s)}
    v.update({n: x for n, x in reading.values.items() if n in v})
    if not reading.has_timescaledb:
        v[TSDB_WORKERS] = 0
    values = _pg(v, s.values.qbctl_postgres_backend_overhead, 0, schedulers(s, reading))
    fixed = model.shared_fixed(reading.allocated, values) if reading.allocated else model.SHARED_FIXED
    return replace(values, shared_fixed=fixed)


def read_pg(settings: Settings, *, rt: Runtime) -> PgReading | None:
    """The running server's values, or None when it cannot be asked."""
    from qbctl.db import connect

    names = [*PG_DECIDED, *PG_SERVER_DECIDES]
    try:
        with connect.connect(settings, timeout=2, rt=rt) as conn:
            rows = conn.execute(
                "SELECT name, setting, unit, source FROM pg_settings WHERE name = ANY(%s)", (names,)
            ).fetchall()
            allocated = conn.execute("SELECT sum(allocated_size)::bigint FROM pg_shmem_allocations").fetchone()[0]
            running = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'TimescaleDB Background Worker Scheduler'"
            ).fetchone()[0]
    except QbctlError:
        return None
    return PgReading.from_rows(rows, allocated, running)


def redis_values(s: Settings, config: dict | None = None) -> model.RedisValues:
    """The configuration the next `up` applies: maxmemory from the settings; whether Redis saves in the
    background is Redis's own (qbctl keeps its save rules): the running server's, else its default. Pure."""
    return model.RedisValues(s.values.redis_max_memory, _saves(config) if config else True)


def redis_values_from_config(config: dict) -> model.RedisValues:
    """As it runs, from CONFIG GET maxmemory / save / appendonly. Pure."""
    return model.RedisValues(int(config.get("maxmemory") or 0), _saves(config))


def redis_settings_values(s: Settings) -> dict[str, float | str]:
    return {"maxmemory": s.values.redis_max_memory, "maxmemory-policy": s.values.redis_maxmemory_policy}


def redis_running_values(config: dict) -> dict[str, float | str]:
    """The decided values as CONFIG GET gives them."""
    return {"maxmemory": float(config.get("maxmemory") or 0), "maxmemory-policy": config.get("maxmemory-policy", "")}


def _saves(config: dict) -> bool:
    return bool((config.get("save") or "").strip()) or config.get("appendonly") == "yes"


# --- what runs against the settings --------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """One value the running stack has and the settings do not."""

    value: str  # the server's name for it: maxmemory, work_mem, memory limit
    setting: str | None  # the setting that changes it (None: qbctl's own fixed value)
    running: float | int | str  # bytes, counts, or a word (maxmemory-policy)
    settings: float | int | str
    applied_by_up: bool | None  # does the next `qbctl up` apply the settings' value (None: not known)
    text: str


SIZES = {
    "shared_buffers",
    "wal_buffers",
    "work_mem",
    "maintenance_work_mem",
    "autovacuum_work_mem",
    "temp_buffers",
    "maxmemory",
    "memory limit",
}
KEPT = "`qbctl up` keeps the container (its settings did not change)"


def show(name: str, value: float | str) -> str:
    """A value as people write it: 100MB, 512kB, 10, allkeys-lru."""
    if isinstance(value, str) or name not in SIZES or value < 0:
        return value if isinstance(value, str) else f"{value:g}"
    return f"{round(value / MB, 1):g}MB" if value >= MB else f"{value / 1024:g}kB"


def _plain(value: float | str) -> float | int | str:
    """JSON's shape of a value: 100 connections and 104857600 bytes as integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _same(name: str, have: float | str, want: float | str) -> bool:
    if isinstance(have, str) or isinstance(want, str):
        return str(have) == str(want)
    return abs(have - want) <= (4096 if name == "memory limit" else 1e-9)  # a cgroup limit is in pages


def differences(
    settings_values: dict,
    running_values: dict,
    recreated: bool | None,
    why_kept: str,
    in_data: tuple[str, ...] = (),
    setting_of: dict | None = None,
) -> list[Difference]:
    """Each value that differs between what runs and the settings, and whether the next `qbctl up`
    applies the settings' value: yes when it recreates the container, no when it keeps it (why_kept)
    or the value is set inside the data. Pure."""
    found = []
    for name, want in settings_values.items():
        have = running_values.get(name)
        if have is None or _same(name, have, want):
            continue
        if name in in_data:
            applied, how = (
                False,
                (
                    f"`qbctl up` does not change it: it is set for the database or its user (ALTER "
                    f"DATABASE/ROLE ... SET {name}), which wins over the server's command line"
                ),
            )
        elif recreated is None:
            applied, how = None, "applied when `qbctl up` recreates the container"
        elif recreated:
            applied, how = True, "applied by the next `qbctl up`"
        else:
            applied, how = False, why_kept
        text = f"running: {name} {show(name, have)}; settings: {show(name, want)}, {how}"
        found.append(Difference(name, (setting_of or {}).get(name), _plain(have), _plain(want), applied, text))
    return found
