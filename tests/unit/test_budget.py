from __future__ import annotations

from pathlib import Path

from qbctl.checks import budget
from qbctl.config import settings as S
from qbctl.config.sizes import MB


def load(**env):
    return S.load(environ=env, cwd=Path("/nonexistent"))


def run(s, containers=None, info=None, families=None):
    r = budget.configured(s)
    budget.apply_measurements(r, s, containers or {}, info, families)
    return r


def test_defaults_fit_and_explain_themselves():
    r = run(load())
    assert r.ok and r.budget_mb == 1024
    pg = r.items[0]
    assert pg.configured_mb == 292 and "max_connections 20 x (work_mem 4 + backend 2)" in pg.derivation
    rd = r.items[1]
    assert rd.configured_mb == 150 and "maxmemory 120 + 25% overhead" in rd.derivation


def test_postgres_worst_case_over_its_share_names_the_setting():
    r = run(load(POSTGRES_MAX_CONNECTIONS="100"))
    assert not r.ok and r.error.code == "BUDGET_EXCEEDED"
    pg = r.items[0]
    assert pg.configured_mb == 128 + 100 * 6 + 32 + 12
    assert "POSTGRES_MAX_CONNECTIONS=21" in pg.fix
    fixed = run(load(POSTGRES_MAX_CONNECTIONS="21"))
    assert fixed.ok


def test_redis_maxmemory_must_leave_room_for_overhead():
    r = run(load(REDIS_MAX_MEMORY="150MB"))
    assert not r.ok and "REDIS_MAX_MEMORY=120MB" in r.items[1].fix
    assert not run(load(REDIS_MAX_MEMORY="900MB")).ok


def test_shares_must_fit_the_vm():
    r = run(load(QBCTL_BUDGET_BACKEND="400MB"))
    total = [i for i in r.items if i.name == "total"][0]
    assert not total.ok and "126MB more than QBCTL_BUDGET_TOTAL" in total.fix


def test_measured_overruns_and_families():
    s = load()
    r = run(s, containers={"postgres": 310 * MB, "redis": 20 * MB, "adminer": 500 * MB},
            info={"used_memory": 10 * MB, "used_memory_rss": 15 * MB},
            families={"market": 10 * MB, "candles": 35 * MB, "indicators": 25 * MB})
    bad = {i.name for i in r.items + r.redis_families if not i.ok}
    assert bad == {"postgres", "market", "indicators"}  # adminer is a dev tool: never over the VM budget
    market = [f for f in r.redis_families if f.name == "market"][0]
    assert market.measured_mb == 45 and "MAX_CANDLES_PER_SYMBOL" in market.fix


def test_family_of_keys():
    assert budget.family_of("market:005930") == "market"
    assert budget.family_of("candles:005930:1m") == "candles"
    assert budget.family_of("session:abc") == "cache"
