"""The memory model: each service's peak under the backend's load, term by term. Pure arithmetic.

One model for the configuration the next `qbctl up` applies: its inputs are the settings' values, and
a running server fills in only what the settings do not decide (qbctl.checks.budget), so the same
configuration gets the same prediction whether the stack runs or not. The constants below were
measured with `qbctl budget --load` on the QB schema with TimescaleDB (docs/benchmarks.md has the
runs), and the shared memory ones with PostgreSQL 15's pg_shmem_allocations; each term says where
it comes from, so a reader can follow the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbctl.config.sizes import MB

# --- Redis's key families ------------------------------------------------------------------------
# The team's split of Redis memory (50/30/20/50 of 150 MB), applied to maxmemory.
REDIS_FAMILIES = (
    ("market", "market:*", 50),
    ("candles", "candles:*", 0),
    ("indicators", "indicators:*", 30),
    ("events", "events:*", 20),
    ("cache", "cache:*", 50),
)
FAMILY_TOTAL = sum(w for _, _, w in REDIS_FAMILIES)


def family_of(key: str) -> str:
    """The family a Redis key counts in (by its prefix); anything else competes with the cache share."""
    for name, pattern, _ in REDIS_FAMILIES:
        if key.startswith(pattern[:-1]):
            return name
    return "cache"


# --- PostgreSQL ----------------------------------------------------------------------------------
PROCESS_BASE = int(0.75 * MB)  # private memory of an idle server process (checkpointer, walwriter, ...)
SERVER_PROCESSES = 7  # postmaster, checkpointer, background writer, walwriter, autovacuum launcher,
#                       logical replication launcher, TimescaleDB's launcher
# Shared memory besides the buffers and WAL buffers, as PostgreSQL 15 sizes it (pg_shmem_allocations,
# measured at 10-100 connections, 64-256MB of buffers, 6-12 worker processes: within 100kB, as
# PostgreSQL sizes its lock tables in steps; tests/unit/test_budget.py has the figures):
SHARED_PER_BUFFER_MB = 31_300  # per MB of shared_buffers: buffer descriptors, their lookup table, I/O state
SHARED_PER_SLOT = 48_300  # per process slot (PGPROC, its lock table share at max_locks_per_transaction 64)
SHARED_FIXED = int(1.6 * MB)  # the rest: SLRU caches, statistics, TimescaleDB's own (a running server's
#                               own figure replaces it: qbctl.checks.running.pg_values)
# --- Redis ---------------------------------------------------------------------------------------
REDIS_FRAGMENTATION = 1.15  # RSS / used_memory under allkeys-lru eviction with the backend's value sizes
REDIS_BASE = 3 * MB  # the server itself, before any data
REDIS_COW_SHARE = 0.10  # pages written during a background save, copied for the forked child
# --- both ------------------------------------------------------------------------------------------
# A container's limit is charged for page cache too. Clean pages are dropped before anything is
# killed; dirty ones (WAL, data, an RDB file being written) are not, at once. A prediction fits when
# it leaves this share of the limit to them (and any under-prediction: at most 0.5% in the measured runs).
CACHE_RESERVE = 0.10


def fits(predicted: int, limit: int) -> bool:
    return predicted <= limit * (1 - CACHE_RESERVE)


@dataclass(frozen=True)
class Term:
    name: str
    bytes: int
    text: str

    @property
    def mb(self) -> float:
        return round(self.bytes / MB, 1)


@dataclass(frozen=True)
class Prediction:
    service: str
    terms: tuple[Term, ...]

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.terms)

    @property
    def mb(self) -> float:
        return round(self.bytes / MB, 1)

    def derivation(self) -> str:
        shown = [t for t in self.terms if t.bytes or t.text]
        return " + ".join(f"{t.name} {t.mb:g} ({t.text})" for t in shown) + f" = {self.mb:g}MB"


@dataclass(frozen=True)
class PgValues:
    shared_buffers: int
    wal_buffers: int
    work_mem: int
    hash_mem_multiplier: float
    maintenance_work_mem: int
    autovacuum_work_mem: int  # -1: maintenance_work_mem
    autovacuum_max_workers: int
    max_connections: int
    superuser_reserved_connections: int
    max_parallel_workers_per_gather: int
    max_parallel_workers: int
    max_worker_processes: int
    temp_buffers: int
    tsdb_background_workers: int  # 0 without TimescaleDB
    backend: int  # a session's own memory with TimescaleDB's caches (QBCTL_POSTGRES_BACKEND_OVERHEAD)
    max_wal_senders: int = 10  # PostgreSQL's default: each is a process slot in shared memory
    shared_fixed: int = SHARED_FIXED  # shared memory no setting sizes (a running server's own figure)
    schedulers: int = 2  # TimescaleDB's job schedulers: one per database with the extension (the image makes 2)

    @property
    def process_slots(self) -> int:
        """PostgreSQL's MaxBackends plus the WAL senders: the processes shared memory has room for."""
        return self.max_connections + self.autovacuum_max_workers + 1 + self.max_worker_processes + self.max_wal_senders

    def shared_sized(self) -> int:
        """The shared memory the settings size: buffers, WAL buffers, and what grows with them."""
        return (
            self.shared_buffers
            + self.wal_buffers
            + SHARED_PER_BUFFER_MB * self.shared_buffers // MB
            + SHARED_PER_SLOT * self.process_slots
        )


def shared_fixed(allocated: int, running: PgValues) -> int:
    """The part of a running server's shared memory (sum of pg_shmem_allocations) that no setting sizes:
    what it allocated minus what its own values size. Pure."""
    return max(0, allocated - running.shared_sized())


def postgres(v: PgValues) -> Prediction:
    # A session at the peak: its own memory (catalog and TimescaleDB caches, plans) and one sort at
    # work_mem. A hash may take work_mem x hash_mem_multiplier; measured over the backend's queries,
    # the sessions' average at the peak is one work_mem (docs/benchmarks.md).
    session = v.backend + v.work_mem
    sessions = max(0, v.max_connections - v.superuser_reserved_connections)
    parallel = min(v.max_parallel_workers, sessions * v.max_parallel_workers_per_gather)
    # An autovacuum worker's dead-tuple array takes up to this limit. The table's size bounds it, but
    # tables grow (orders and trades are never dropped): the configuration allows the limit, and the
    # prediction is for the configuration, not for today's data (the same with the stack down).
    vacuum_limit = v.autovacuum_work_mem if v.autovacuum_work_mem > 0 else v.maintenance_work_mem
    vacuum_name = "autovacuum_work_mem" if v.autovacuum_work_mem > 0 else "maintenance_work_mem"
    # TimescaleDB's workers: its launcher, a scheduler per database with the extension, and the jobs.
    jobs = max(0, v.tsdb_background_workers - 1 - v.schedulers) if v.tsdb_background_workers else 0
    by_buffers = SHARED_PER_BUFFER_MB * v.shared_buffers // MB
    shared = Term(
        "shared memory",
        v.shared_sized() + v.shared_fixed,
        f"shared_buffers {_mb(v.shared_buffers)} + wal_buffers {_mb(v.wal_buffers)} + their descriptors "
        f"{_mb(by_buffers)} + {v.process_slots} process slots x {SHARED_PER_SLOT / 1024:.0f}kB + "
        f"{_mb(v.shared_fixed)} no setting sizes",
    )
    server = SERVER_PROCESSES + (v.schedulers if v.tsdb_background_workers else 0)  # (the launcher is one of 7)
    per_session = f"backend {_mb(v.backend)} + work_mem {_mb(v.work_mem)} (a hash may take x{v.hash_mem_multiplier:g})"
    terms = (
        shared,
        Term("server processes", server * PROCESS_BASE, f"{server} x {_mb(PROCESS_BASE)}"),
        Term(
            "sessions",
            sessions * session,
            f"max_connections {v.max_connections} - superuser_reserved "
            f"{v.superuser_reserved_connections} = {sessions} x ({per_session})",
        ),
        Term(
            "parallel workers",
            parallel * session,
            f"{parallel} x the same (max_parallel_workers_per_gather {v.max_parallel_workers_per_gather})",
        ),
        Term(
            "autovacuum",
            v.autovacuum_max_workers * (PROCESS_BASE + vacuum_limit),
            f"{v.autovacuum_max_workers} x (process {_mb(PROCESS_BASE)} + {vacuum_name} {_mb(vacuum_limit)})",
        ),
        Term(
            "TimescaleDB jobs",
            jobs * session,
            f"max_background_workers {v.tsdb_background_workers} - the launcher - {v.schedulers} "
            f"scheduler{'' if v.schedulers == 1 else 's'} = {jobs} job slot{'' if jobs == 1 else 's'} x a session"
            if v.tsdb_background_workers
            else "no TimescaleDB",
        ),
        Term("temp_buffers", 0, f"{_mb(v.temp_buffers)} x sessions that use temporary tables: none in the backend"),
    )
    return Prediction("postgres", terms)


@dataclass(frozen=True)
class RedisValues:
    maxmemory: int
    saves: bool  # background saves configured (the `save` rules, or AOF rewrites)


def redis(v: RedisValues) -> Prediction:
    data = int(v.maxmemory * REDIS_FRAGMENTATION)
    terms = (
        Term(
            "data",
            data,
            f"maxmemory {_mb(v.maxmemory)} x fragmentation {REDIS_FRAGMENTATION:g}; client "
            "output buffers (pub/sub) count inside maxmemory",
        ),
        Term("server", REDIS_BASE, "the server before any data"),
        Term(
            "background save",
            int(v.maxmemory * REDIS_COW_SHARE) if v.saves else 0,
            f"fork: {int(REDIS_COW_SHARE * 100)}% of maxmemory rewritten during a save and copied"
            if v.saves
            else "no background saves (save '')",
        ),
    )
    return Prediction("redis", terms)


def _mb(n: float) -> str:
    value = n / MB
    return f"{value:.0f}MB" if value >= 10 or value == int(value) else f"{value:.3g}MB"
