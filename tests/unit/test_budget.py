"""The budget's arithmetic: the model's terms, the values read back from a server, fixes. No services."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from qbctl.checks import budget, kills, load, model, running
from qbctl.config import settings as S
from qbctl.config.sizes import MB


def settings(**env):
    return S.load(environ=env, cwd=Path("/nonexistent"))


def run(s, containers=None, info=None, families=None, now=None):
    r = budget.configured(s, now)
    budget.apply_measurements(r, s, containers or {}, info, families)
    return r


def term(pred: model.Prediction, name: str) -> model.Term:
    return next(t for t in pred.terms if t.name == name)


def test_defaults_fit_and_explain_every_term():
    r = run(settings())
    assert r.ok and r.budget_mb == 1024
    pg = r.items[0]
    # 138.9 shared (128 + 4 WAL + 3.8 descriptors + 30 slots x 47kB + 1.6) + 9 x 0.75 server (7 and the
    # schedulers of postgres and qb_trading_dev) + 7 x (5 + 4) sessions + 2 x (0.75 + 16) autovacuum
    # + (5 - 1 - 2) x 9 TimescaleDB jobs = 260.1, under 270 (90% of 300)
    assert pg.configured_mb == 260.1
    for text in (
        "shared_buffers 128MB",
        "wal_buffers 4MB",
        "30 process slots x 47kB",
        "1.6MB no setting sizes",
        "max_connections 10 - superuser_reserved 3 = 7",
        "work_mem 4MB",
        "parallel workers 0",
        "2 x (process 0.75MB + maintenance_work_mem 16MB)",
        "server processes 6.8 (9 x",
        "max_background_workers 5 - the launcher - 2 schedulers = 2 job slots",
        "temp_buffers 0",
        "values from the settings",
        "PostgreSQL's defaults for what they do not decide",
        "fits when at most 270MB",
    ):
        assert text in pg.derivation, text
    rd = r.items[1]
    assert rd.configured_mb == 128 and "maxmemory 100MB x fragmentation 1.15" in rd.derivation
    assert "background save 10" in rd.derivation
    assert pg.running_mb is None and pg.differences == [] and rd.differences == []  # nothing runs


def test_more_connections_and_parallel_workers_are_counted_and_fixed():
    s = settings(POSTGRES_MAX_CONNECTIONS="30", POSTGRES_MAX_PARALLEL_WORKERS="2")
    pred = model.postgres(running.pg_values(s))
    assert term(pred, "sessions").bytes == 27 * 9 * MB
    assert term(pred, "parallel workers").bytes == 2 * 9 * MB  # max_parallel_workers caps them
    r = run(s)
    assert not r.ok and r.error.code == "BUDGET_EXCEEDED"
    assert "POSTGRES_MAX_CONNECTIONS=" in r.items[0].fix and "QBCTL_BUDGET_POSTGRES=" in r.items[0].fix
    fewer = int(r.items[0].fix.split("POSTGRES_MAX_CONNECTIONS=")[1].split()[0])
    assert run(settings(POSTGRES_MAX_CONNECTIONS=str(fewer), POSTGRES_MAX_PARALLEL_WORKERS="2")).items[0].ok


def test_the_schedulers_are_the_image_s_databases_or_those_that_run_and_leave_the_job_slots():
    # The TimescaleDB image creates the extension in postgres and in POSTGRES_DB: two schedulers, each
    # holding a background worker; the default leaves the 2 job slots the README promises.
    default = running.pg_values(settings())
    assert default.schedulers == 2 and default.tsdb_background_workers - 1 - default.schedulers == 2
    same = running.pg_values(settings(DATABASE_URL="postgresql://u:p@localhost:5432/postgres"))
    assert same.schedulers == 1  # POSTGRES_DB is postgres: one database, one scheduler
    assert "= 3 job slots" in model.postgres(same).derivation()
    one = running.pg_values(settings(TIMESCALEDB_MAX_BACKGROUND_WORKERS="4"))
    assert "= 1 job slot x a session" in model.postgres(one).derivation()
    s = settings()
    counted = running.PgReading.from_rows(server_rows(s), ALLOCATED[128, 10], schedulers=3)  # pg_stat_activity
    assert running.pg_values(s, counted).schedulers == 3 == running.running_pg_values(counted, s).schedulers
    assert "5 - the launcher - 3 schedulers = 1 job slot" in model.postgres(running.pg_values(s, counted)).derivation()
    starting = running.PgReading.from_rows(server_rows(s), ALLOCATED[128, 10], schedulers=0)  # none started yet
    assert running.pg_values(s, starting).schedulers == 2


def test_smaller_shared_buffers_leave_room():
    small = model.postgres(running.pg_values(settings(POSTGRES_SHARED_BUFFERS="64MB")))
    # WAL buffers: 1/32 of shared_buffers; 30 process slots; the fixed rest
    sized = (64 + 2) * MB + model.SHARED_PER_BUFFER_MB * 64 + 30 * model.SHARED_PER_SLOT
    assert term(small, "shared memory").bytes == sized + model.SHARED_FIXED


# pg_shmem_allocations' sum on PostgreSQL 15.18 with TimescaleDB 2.28.3 preloaded, wal_buffers 4MB, autovacuum
# 2, 6 worker processes: (shared_buffers MB, max_connections) -> bytes. The model's constants come from these.
ALLOCATED = {
    (128, 10): 145_514_496,
    (128, 20): 146_063_360,
    (128, 40): 146_964_480,
    (128, 100): 149_856_256,
    (64, 10): 76_406_784,
    (256, 10): 283_746_304,
}


@pytest.mark.parametrize("buffers,connections", ALLOCATED)
def test_shared_memory_as_postgresql_sizes_it(buffers, connections):
    v = replace(
        running.pg_values(settings()),
        shared_buffers=buffers * MB,
        wal_buffers=4 * MB,
        max_connections=connections,
        max_worker_processes=6,
    )  # as measured
    # within 100kB (0.04% of the default prediction): PostgreSQL sizes its lock tables in steps
    assert abs(v.shared_sized() + model.SHARED_FIXED - ALLOCATED[buffers, connections]) < 100_000
    # a running server's own figure of what no setting sizes is as close to the model's constant
    assert abs(model.shared_fixed(ALLOCATED[buffers, connections], v) - model.SHARED_FIXED) < 100_000


PG_UNITS = {
    "shared_buffers": (8192, "8kB"),
    "wal_buffers": (8192, "8kB"),
    "temp_buffers": (8192, "8kB"),
    "work_mem": (1024, "kB"),
    "maintenance_work_mem": (1024, "kB"),
    "autovacuum_work_mem": (1024, "kB"),
}


def server_rows(s, source="command line", **changed) -> list[tuple]:
    """pg_settings rows as a server started with these settings shows them (`changed`: other values, from
    `source` when qbctl decides them)."""
    values = {**running.PG_SERVER_DECIDES, **running.pg_settings_values(s), **changed}
    rows = []
    for name, value in values.items():
        factor, unit = PG_UNITS.get(name, (1, None))
        shown = value / factor if value >= 0 else value
        where = (source if name in changed else "command line") if name in running.PG_DECIDED else "default"
        rows.append((name, f"{shown:g}", unit, where))
    return rows


def reading(s, allocated=ALLOCATED[128, 10], source="command line", **changed) -> running.PgReading:
    return running.PgReading.from_rows(server_rows(s, source, **changed), allocated)


def test_the_same_configuration_gets_the_same_prediction_up_or_down():
    for env in (
        {},
        {"POSTGRES_MAX_CONNECTIONS": "20", "POSTGRES_SHARED_BUFFERS": "64MB"},
        {"POSTGRES_WORK_MEM": "8MB", "TIMESCALEDB_MAX_BACKGROUND_WORKERS": "8"},
    ):
        s = settings(**env)
        down = budget.configured(s)
        # what this machine's PostgreSQL allocates for it: the model's own sizing, plus a fixed part 0.4MB off
        v = running.pg_values(s)
        up = budget.configured(s, running.Running(pg=reading(s, v.shared_sized() + model.SHARED_FIXED + 400_000)))
        a, b = down.items[0].configured_mb, up.items[0].configured_mb
        assert abs(a - b) / a < 0.01, (env, a, b)
        assert up.items[0].running_mb == b and up.items[0].differences == []
        assert "from the running server, what they do not decide" in up.items[0].derivation


def test_the_server_fills_in_only_what_the_settings_do_not_decide():
    s = settings()
    # A server running other values: more connections and work_mem (an earlier `up`), and 5 reserved
    # connections and an autovacuum_work_mem from its postgresql.conf (no setting of qbctl's decides those).
    r = reading(s, max_connections=100, work_mem=8 * MB, superuser_reserved_connections=5, autovacuum_work_mem=8 * MB)
    values = running.pg_values(s, r)
    assert (values.max_connections, values.work_mem) == (10, 4 * MB)  # the settings'
    assert (values.superuser_reserved_connections, values.autovacuum_work_mem) == (5, 8 * MB)  # the server's
    now = running.running_pg_values(r, s)
    assert (now.max_connections, now.work_mem, now.superuser_reserved_connections) == (100, 8 * MB, 5)
    item = budget.configured(s, running.Running(pg=r, recreated={"postgres": True})).items[0]
    assert item.ok and item.configured_mb == model.postgres(values).mb
    assert item.running_mb == model.postgres(now).mb and item.running_mb > 270  # what runs would not fit
    assert [d.text for d in item.differences] == [
        "running: work_mem 8MB; settings: 4MB, applied by the next `qbctl up`",
        "running: max_connections 100; settings: 10, applied by the next `qbctl up`",
    ]
    assert item.differences[1].setting == "POSTGRES_MAX_CONNECTIONS" and item.differences[1].applied_by_up
    assert (item.differences[1].running, item.differences[1].settings) == (100, 10)
    assert isinstance(item.differences[1].running, int) and item.differences[0].running == 8 * MB
    assert "superuser_reserved_connections 5, autovacuum_work_mem 8MB" in item.basis
    # Whether TimescaleDB is loaded is the image's to say: a server without it has no workers to count.
    plain = running.PgReading.from_rows(
        [r for r in server_rows(s) if not r[0].startswith("timescaledb.")], ALLOCATED[128, 10]
    )
    assert running.pg_values(s, plain).tsdb_background_workers == 0
    assert "no TimescaleDB in its image" in budget.configured(s, running.Running(pg=plain)).items[0].basis


def test_a_value_set_for_the_database_or_its_user_is_the_servers():
    s = settings()
    r = reading(s, source="user", work_mem=64 * MB)  # ALTER ROLE qb_user SET work_mem = '64MB'
    result = budget.configured(s, running.Running(pg=r, recreated={"postgres": False}))
    item = result.items[0]
    assert running.pg_values(s, r).work_mem == 64 * MB  # the backend's sessions get it, whatever `up` passes
    assert not item.ok and not result.ok
    (d,) = [d for d in item.differences if d.value == "work_mem"]
    assert d.applied_by_up is False and "`qbctl up` does not change it" in d.text and "ALTER" in d.text
    assert item.fix.startswith(
        "reset what is set for the database or its user (ALTER ROLE/DATABASE ... RESET work_mem)"
    )


def test_redis_running_with_another_maxmemory_is_named_and_the_settings_judged():
    s = settings(REDIS_MAX_MEMORY="900MB")
    config = {"maxmemory": str(100 * MB), "maxmemory-policy": "allkeys-lru", "save": "3600 1 300 100 60 10000"}
    r = budget.configured(s, running.Running(redis_config=config, recreated={"redis": True}))
    rd = r.items[1]
    assert not r.ok and not rd.ok and rd.configured_mb == 1128 and rd.running_mb == 128
    assert [d.text for d in rd.differences] == [
        "running: maxmemory 100MB; settings: 900MB, applied by the next `qbctl up`"
    ]
    assert "REDIS_MAX_MEMORY=105MB" in r.error.hint
    # the other way round: a running Redis too large for its share, the settings that fit: ok, and said
    back = budget.configured(
        settings(), running.Running(redis_config={**config, "maxmemory": str(900 * MB)}, recreated={"redis": True})
    )
    assert back.ok and back.items[1].running_mb == 1128
    assert back.notes == ["redis as it runs now (predicted 1128MB) does not fit its 150MB limit; the settings do"]


def test_whether_up_applies_a_difference_is_said_as_it_is():
    s = settings()
    config = {"maxmemory": str(900 * MB), "maxmemory-policy": "allkeys-lru", "save": ""}
    # The container's settings are unchanged: someone ran CONFIG SET; `up` keeps the container.
    kept = budget.configured(s, running.Running(redis_config=config, recreated={"redis": False})).items[1]
    (d,) = kept.differences
    assert d.applied_by_up is False and "changed at runtime (CONFIG SET)" in d.text and "keeps" in d.text
    assert kept.configured_mb == 118  # Redis's own value fills in: no background saves ('save ""')
    unknown = budget.configured(s, running.Running(redis_config=config)).items[1]  # the engine did not answer
    assert unknown.differences[0].applied_by_up is None and "when `qbctl up` recreates" in unknown.differences[0].text
    limits = budget.configured(
        settings(QBCTL_BUDGET_REDIS="200MB"),
        running.Running(
            redis_config={**config, "maxmemory": str(100 * MB)},
            limits={"redis": 150 * MB, "postgres": 300 * MB},
            recreated={"redis": True, "postgres": False},
        ),
    )
    assert [d.text for d in limits.items[1].differences] == [
        "running: memory limit 150MB; settings: 200MB, applied by the next `qbctl up`"
    ]
    assert limits.items[0].differences == []  # postgres runs with its share


def test_differences_compare_values_not_their_spelling():
    same = running.differences(
        {"maxmemory": 100.0 * MB, "maxmemory-policy": "allkeys-lru"},
        {"maxmemory": 104857600.0, "maxmemory-policy": "allkeys-lru"},
        True,
        "",
    )
    assert same == []
    paged = running.differences({"memory limit": 300 * MB + 100}, {"memory limit": 300 * MB}, True, "")
    assert paged == []  # a cgroup's limit is whole pages
    assert running.differences({"work_mem": 4 * MB}, {}, True, "") == []  # not read: nothing to say


def test_redis_maxmemory_must_leave_room_for_fragmentation_and_the_fork():
    r = run(settings(REDIS_MAX_MEMORY="120MB"))  # what qbctl ran before: killed during a save under load
    assert not r.ok and "REDIS_MAX_MEMORY=105MB" in r.items[1].fix
    assert run(settings(REDIS_MAX_MEMORY="105MB")).items[1].ok  # the fix fits
    without_saves = model.redis(running.redis_values_from_config({"maxmemory": str(110 * MB), "save": ""}))
    with_saves = model.redis(running.redis_values_from_config({"maxmemory": str(110 * MB), "save": "3600 1"}))
    assert term(without_saves, "background save").bytes == 0 and term(with_saves, "background save").bytes > 0
    assert model.fits(without_saves.bytes, 150 * MB) and not model.fits(with_saves.bytes, 150 * MB)


def test_shares_must_fit_the_vm():
    r = run(settings(QBCTL_BUDGET_BACKEND="400MB"))
    total = [i for i in r.items if i.name == "total"][0]
    assert not total.ok and "126MB more than QBCTL_BUDGET_TOTAL" in total.fix


def test_measured_overruns_and_families():
    s = settings()
    r = run(
        s,
        containers={"postgres": 310 * MB, "redis": 20 * MB, "adminer": 500 * MB},
        info={"used_memory": 10 * MB, "used_memory_rss": 15 * MB},
        families={"market": 10 * MB, "candles": 30 * MB, "indicators": 25 * MB},
    )
    bad = {i.name for i in r.items + r.redis_families if not i.ok}
    assert bad == {"postgres", "market", "indicators"}  # adminer is a dev tool: never over the VM budget
    market = [f for f in r.redis_families if f.name == "market"][0]
    assert market.measured_mb == 40 and "MAX_CANDLES_PER_SYMBOL" in market.fix


def test_family_of_keys():
    assert model.family_of("market:005930") == "market"
    assert model.family_of("candles:005930:1m") == "candles"
    assert model.family_of("session:abc") == "cache"


def test_kill_evidence_is_read_from_cgroup_counters_and_the_postgres_log():
    assert kills.oom_kill_count("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n") == 2  # cgroup v2 memory.events
    assert kills.oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n") == 5  # v1 memory.oom_control
    assert kills.oom_kill_count("") is None and kills.oom_kill_count(None) is None
    log = (
        "2026-11-26 16:00:01 UTC [1] LOG:  server process (PID 416) was terminated by signal 9: Killed\n"
        "2026-11-26 16:00:01 UTC [1] LOG:  checkpoint starting: time\n"
        "2026-11-26 16:00:02 UTC [480] LOG:  database system was not properly shut down; automatic recovery "
        "in progress\n"
    )
    found = kills.pg_kills(log)
    assert len(found) == 2 and "PID 416" in found[0] and "recovery" in found[1]


@pytest.mark.parametrize(
    "values,p50,p99", [([1.0] * 99 + [100.0], 1.0, 1.0), (list(range(1, 101)), 50, 99), ([5.0], 5.0, 5.0)]
)
def test_percentiles(values, p50, p99):
    assert load.percentile(values, 50) == p50 and load.percentile(values, 99) == p99
    assert load.percentile([], 50) is None
