"""The budget's arithmetic: the model's terms, the values read back from a server, fixes. No services."""
from __future__ import annotations

from pathlib import Path

import pytest

from qbctl.checks import budget, kills, load, model
from qbctl.config import settings as S
from qbctl.config.sizes import MB


def settings(**env):
    return S.load(environ=env, cwd=Path("/nonexistent"))


def run(s, containers=None, info=None, families=None, pg=None, rd=None):
    r = budget.configured(s, pg, rd)
    budget.apply_measurements(r, s, containers or {}, info, families)
    return r


def term(pred: model.Prediction, name: str) -> model.Term:
    return next(t for t in pred.terms if t.name == name)


def test_defaults_fit_and_explain_every_term():
    r = run(settings())
    assert r.ok and r.budget_mb == 1024
    pg = r.items[0]
    # 139 shared (128 + 4 WAL + 7) + 9 x 0.75 server (7 and the schedulers of postgres and qb_trading_dev)
    # + 7 x (5 + 4) sessions + 2 x (0.75 + 16) autovacuum + (5 - 1 - 2) x 9 TimescaleDB jobs = 260.25, under
    # 270 (90% of 300: the page-cache reserve)
    assert pg.configured_mb == 260.2
    for text in ("shared_buffers 128MB", "wal_buffers 4MB", "max_connections 10 - superuser_reserved 3 = 7",
                 "work_mem 4MB", "parallel workers 0", "2 x (process 0.75MB + maintenance_work_mem 16MB)",
                 "max_background_workers 5 - the launcher - 2 schedulers = 2 job slots", "server processes 6.8 (9 x",
                 "temp_buffers 0", "fits when at most 270MB"):
        assert text in pg.derivation, text
    rd = r.items[1]
    assert rd.configured_mb == 128 and "maxmemory 100MB x fragmentation 1.15" in rd.derivation
    assert "background save 10" in rd.derivation


def test_more_connections_and_parallel_workers_are_counted_and_fixed():
    s = settings(POSTGRES_MAX_CONNECTIONS="30", POSTGRES_MAX_PARALLEL_WORKERS="2")
    pred = model.postgres(budget.pg_values(s))
    assert term(pred, "sessions").bytes == 27 * 9 * MB
    assert term(pred, "parallel workers").bytes == 2 * 9 * MB  # max_parallel_workers caps them
    r = run(s)
    assert not r.ok and r.error.code == "BUDGET_EXCEEDED"
    assert "POSTGRES_MAX_CONNECTIONS=" in r.items[0].fix and "QBCTL_BUDGET_POSTGRES=" in r.items[0].fix
    fewer = int(r.items[0].fix.split("POSTGRES_MAX_CONNECTIONS=")[1].split()[0])
    assert run(settings(POSTGRES_MAX_CONNECTIONS=str(fewer), POSTGRES_MAX_PARALLEL_WORKERS="2")).items[0].ok


def test_the_schedulers_are_the_image_s_databases_and_leave_the_job_slots():
    # The TimescaleDB image creates the extension in postgres and in POSTGRES_DB: two schedulers, each
    # holding a background worker; the default leaves the 2 job slots the README promises.
    default = budget.pg_values(settings())
    assert default.schedulers == 2 and default.tsdb_background_workers - 1 - default.schedulers == 2
    same = budget.pg_values(settings(DATABASE_URL="postgresql://u:p@localhost:5432/postgres"))
    assert same.schedulers == 1  # POSTGRES_DB is postgres: one database, one scheduler
    assert "= 3 job slots" in model.postgres(same).derivation()
    one = budget.pg_values(settings(TIMESCALEDB_MAX_BACKGROUND_WORKERS="4"))
    assert "= 1 job slot x a session" in model.postgres(one).derivation()


def test_smaller_shared_buffers_leave_room():
    small = model.postgres(budget.pg_values(settings(POSTGRES_SHARED_BUFFERS="64MB")))
    assert term(small, "shared memory").bytes == (64 + 2 + 7) * MB  # WAL buffers: 1/32 of shared_buffers


def test_values_read_back_from_a_server_win():
    rows = [("shared_buffers", "16384", "8kB"), ("wal_buffers", "512", "8kB"), ("work_mem", "8192", "kB"),
            ("hash_mem_multiplier", "2", None), ("maintenance_work_mem", "65536", "kB"),
            ("autovacuum_work_mem", "-1", "kB"), ("autovacuum_max_workers", "3", None),
            ("max_connections", "100", None), ("superuser_reserved_connections", "3", None),
            ("max_parallel_workers_per_gather", "2", None), ("max_parallel_workers", "8", None),
            ("temp_buffers", "1024", "8kB"), ("timescaledb.max_background_workers", "16", None)]
    v = budget.pg_values_from_rows(rows, shared_allocated=150 * MB, backend=5 * MB, largest_table_pages=1000,
                                   schedulers=3)  # counted in pg_stat_activity
    assert (v.shared_buffers, v.work_mem, v.max_connections, v.tsdb_background_workers) == (128 * MB, 8 * MB, 100, 16)
    assert "16 - the launcher - 3 schedulers = 12 job slots" in model.postgres(v).derivation()
    pred = model.postgres(v, "the running server")
    assert term(pred, "shared memory").bytes == 150 * MB
    assert term(pred, "parallel workers").bytes == 8 * 13 * MB
    assert term(pred, "autovacuum").bytes == 3 * (int(0.75 * MB) + 1000 * 291 * 6)  # a chunk's dead-tuple array
    r = run(settings(), pg=v)
    assert not r.ok and "values from the running server" in r.items[0].derivation


def test_redis_maxmemory_must_leave_room_for_fragmentation_and_the_fork():
    r = run(settings(REDIS_MAX_MEMORY="120MB"))  # what qbctl ran before: killed during a save under load
    assert not r.ok and "REDIS_MAX_MEMORY=105MB" in r.items[1].fix
    assert run(settings(REDIS_MAX_MEMORY="105MB")).items[1].ok  # the fix fits
    without_saves = model.redis(budget.redis_values_from_config({"maxmemory": str(110 * MB), "save": ""}))
    with_saves = model.redis(budget.redis_values_from_config({"maxmemory": str(110 * MB), "save": "3600 1"}))
    assert term(without_saves, "background save").bytes == 0 and term(with_saves, "background save").bytes > 0
    assert model.fits(without_saves.bytes, 150 * MB) and not model.fits(with_saves.bytes, 150 * MB)


def test_shares_must_fit_the_vm():
    r = run(settings(QBCTL_BUDGET_BACKEND="400MB"))
    total = [i for i in r.items if i.name == "total"][0]
    assert not total.ok and "126MB more than QBCTL_BUDGET_TOTAL" in total.fix


def test_measured_overruns_and_families():
    s = settings()
    r = run(s, containers={"postgres": 310 * MB, "redis": 20 * MB, "adminer": 500 * MB},
            info={"used_memory": 10 * MB, "used_memory_rss": 15 * MB},
            families={"market": 10 * MB, "candles": 30 * MB, "indicators": 25 * MB})
    bad = {i.name for i in r.items + r.redis_families if not i.ok}
    assert bad == {"postgres", "market", "indicators"}  # adminer is a dev tool: never over the VM budget
    market = [f for f in r.redis_families if f.name == "market"][0]
    assert market.measured_mb == 40 and "MAX_CANDLES_PER_SYMBOL" in market.fix


def test_family_of_keys():
    assert budget.family_of("market:005930") == "market"
    assert budget.family_of("candles:005930:1m") == "candles"
    assert budget.family_of("session:abc") == "cache"


def test_kill_evidence_is_read_from_cgroup_counters_and_the_postgres_log():
    assert kills.oom_kill_count("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n") == 2  # cgroup v2 memory.events
    assert kills.oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n") == 5  # v1 memory.oom_control
    assert kills.oom_kill_count("") is None and kills.oom_kill_count(None) is None
    log = ("2026-11-26 16:00:01 UTC [1] LOG:  server process (PID 416) was terminated by signal 9: Killed\n"
           "2026-11-26 16:00:01 UTC [1] LOG:  checkpoint starting: time\n"
           "2026-11-26 16:00:02 UTC [480] LOG:  database system was not properly shut down; automatic recovery "
           "in progress\n")
    found = kills.pg_kills(log)
    assert len(found) == 2 and "PID 416" in found[0] and "recovery" in found[1]


@pytest.mark.parametrize("values,p50,p99", [([1.0] * 99 + [100.0], 1.0, 1.0), (list(range(1, 101)), 50, 99),
                                            ([5.0], 5.0, 5.0)])
def test_percentiles(values, p50, p99):
    assert load.percentile(values, 50) == p50 and load.percentile(values, 99) == p99
    assert load.percentile([], 50) is None
