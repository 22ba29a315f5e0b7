"""The memory model: each service's peak under the backend's load, term by term. Pure arithmetic.

The inputs are the values in force: read from the running server when there is one (pg_settings,
pg_shmem_allocations, CONFIG GET), else the ones qbctl passes. The constants below were measured
with `qbctl budget --load` on the QB schema with TimescaleDB (docs/benchmarks.md has the runs);
each term says where it comes from, so a reader can follow the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

from qbctl.config.sizes import MB

# --- PostgreSQL ----------------------------------------------------------------------------------
PROCESS_BASE = int(0.75 * MB)  # private memory of an idle server process (checkpointer, walwriter, ...)
SERVER_PROCESSES = 7  # postmaster, checkpointer, background writer, walwriter, autovacuum launcher,
#                       logical replication launcher, TimescaleDB's launcher
SHARED_OTHER = 7 * MB  # shared memory besides the buffers and WAL buffers: locks, procs, SLRU caches
# --- Redis ---------------------------------------------------------------------------------------
REDIS_FRAGMENTATION = 1.15  # RSS / used_memory under allkeys-lru eviction with the backend's value sizes
REDIS_BASE = 3 * MB  # the server itself, before any data
REDIS_COW_SHARE = 0.10  # pages written during a background save, copied for the forked child
# --- both ------------------------------------------------------------------------------------------
# A container's limit is charged for page cache too. Clean pages are dropped before anything is
# killed; dirty ones (WAL, data, an RDB file being written) are not, at once. A prediction fits when
# it leaves this share of the limit to them (it also covers the model's error, within 15% measured).
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
    source: str  # "settings" or "the running server"

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
    temp_buffers: int
    tsdb_background_workers: int  # 0 without TimescaleDB
    backend: int  # a session's own memory with TimescaleDB's caches (QBCTL_POSTGRES_BACKEND_OVERHEAD)
    shared_allocated: int | None = None  # pg_shmem_allocations, when read from a running server
    largest_table_pages: int | None = None  # pg_class.relpages of the largest table, when read from a server
    schedulers: int = 1  # TimescaleDB's job schedulers: one per database with the extension (the image makes 2)


def postgres(v: PgValues, source: str = "settings") -> Prediction:
    # A session at the peak: its own memory (catalog and TimescaleDB caches, plans) and one sort at
    # work_mem. A hash may take work_mem x hash_mem_multiplier; measured over the backend's queries,
    # the sessions' average at the peak is one work_mem (docs/benchmarks.md).
    session = v.backend + v.work_mem
    sessions = max(0, v.max_connections - v.superuser_reserved_connections)
    parallel = min(v.max_parallel_workers, sessions * v.max_parallel_workers_per_gather)
    vacuum_limit = v.autovacuum_work_mem if v.autovacuum_work_mem > 0 else v.maintenance_work_mem
    # VACUUM allocates its dead-tuple array for the table at hand, at most the limit: on chunked
    # hypertables the largest table is a chunk, and the array a few MB (291 tuples a page, 6 bytes each).
    vacuum_mem = vacuum_limit if v.largest_table_pages is None else min(vacuum_limit,
                                                                        v.largest_table_pages * 291 * 6)
    vacuum_text = (f"maintenance_work_mem {_mb(vacuum_limit)}" if v.largest_table_pages is None else
                   f"dead-tuple array {_mb(vacuum_mem)} for the largest table's {v.largest_table_pages} pages, "
                   f"at most maintenance_work_mem {_mb(vacuum_limit)}")
    # TimescaleDB's workers: its launcher, a scheduler per database with the extension, and the jobs.
    jobs = max(0, v.tsdb_background_workers - 1 - v.schedulers) if v.tsdb_background_workers else 0
    if v.shared_allocated:
        shared = Term("shared memory", v.shared_allocated, "pg_shmem_allocations of the running server: "
                      f"shared_buffers {_mb(v.shared_buffers)} and WAL buffers {_mb(v.wal_buffers)} included")
    else:
        shared = Term("shared memory", v.shared_buffers + v.wal_buffers + SHARED_OTHER,
                      f"shared_buffers {_mb(v.shared_buffers)} + wal_buffers {_mb(v.wal_buffers)} + locks and "
                      f"other {_mb(SHARED_OTHER)}")
    server = SERVER_PROCESSES + (v.schedulers if v.tsdb_background_workers else 0)  # (the launcher is one of 7)
    per_session = (f"backend {_mb(v.backend)} + work_mem {_mb(v.work_mem)} (a hash may take "
                   f"x{v.hash_mem_multiplier:g})")
    terms = (
        shared,
        Term("server processes", server * PROCESS_BASE, f"{server} x {_mb(PROCESS_BASE)}"),
        Term("sessions", sessions * session, f"max_connections {v.max_connections} - superuser_reserved "
             f"{v.superuser_reserved_connections} = {sessions} x ({per_session})"),
        Term("parallel workers", parallel * session,
             f"{parallel} x the same (max_parallel_workers_per_gather {v.max_parallel_workers_per_gather})"),
        Term("autovacuum", v.autovacuum_max_workers * (PROCESS_BASE + vacuum_mem),
             f"{v.autovacuum_max_workers} x (process {_mb(PROCESS_BASE)} + {vacuum_text})"),
        Term("TimescaleDB jobs", jobs * session,
             f"max_background_workers {v.tsdb_background_workers} - the launcher - {v.schedulers} "
             f"scheduler{'' if v.schedulers == 1 else 's'} = {jobs} job slot{'' if jobs == 1 else 's'} x a session"
             if v.tsdb_background_workers else "no TimescaleDB"),
        Term("temp_buffers", 0, f"{_mb(v.temp_buffers)} x sessions that use temporary tables: none in the backend"),
    )
    return Prediction("postgres", terms, source)


@dataclass(frozen=True)
class RedisValues:
    maxmemory: int
    saves: bool  # background saves configured (the `save` rules, or AOF rewrites)


def redis(v: RedisValues, source: str = "settings") -> Prediction:
    data = int(v.maxmemory * REDIS_FRAGMENTATION)
    terms = (
        Term("data", data, f"maxmemory {_mb(v.maxmemory)} x fragmentation {REDIS_FRAGMENTATION:g}; client "
             "output buffers (pub/sub) count inside maxmemory"),
        Term("server", REDIS_BASE, "the server before any data"),
        Term("background save", int(v.maxmemory * REDIS_COW_SHARE) if v.saves else 0,
             f"fork: {int(REDIS_COW_SHARE * 100)}% of maxmemory rewritten during a save and copied" if v.saves
             else "no background saves (save '')"),
    )
    return Prediction("redis", terms, source)


def _mb(n: float) -> str:
    value = n / MB
    return f"{value:.0f}MB" if value >= 10 or value == int(value) else f"{value:.3g}MB"
