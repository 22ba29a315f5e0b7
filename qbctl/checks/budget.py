"""The 1 GB budget: configured limits (pure arithmetic, explained) and measured memory.

Configured: every share against the VM; PostgreSQL's worst case against its share;
Redis's maxmemory plus its own overhead against its container limit. Measured: each
container's memory from the engine (without page cache), Redis used_memory, and the
Redis key families by sampling. Every overrun comes with the setting that fixes it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.config.sizes import MB
from qbctl.errors import CheckFailed, QbctlError
from qbctl.result import Result

REDIS_OVERHEAD = 0.25  # Redis needs ~25% above maxmemory for buffers and allocator fragmentation
# The team's split of Redis memory (50/30/20/50 of 150 MB), applied to maxmemory.
REDIS_FAMILIES = (("market", "market:*", 50), ("candles", "candles:*", 0), ("indicators", "indicators:*", 30),
                  ("events", "events:*", 20), ("cache", "cache:*", 50))
FAMILY_TOTAL = sum(w for _, _, w in REDIS_FAMILIES)


@dataclass
class Item:
    name: str
    budget_mb: float
    configured_mb: float | None = None
    measured_mb: float | None = None
    ok: bool = True
    derivation: str = ""
    fix: str | None = None
    production: bool = True  # False: a dev tool, outside the 1 GB budget


@dataclass
class BudgetResult(Result):
    budget_mb: float
    items: list[Item]
    redis_families: list[Item] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)
    ok: bool = True
    error: QbctlError | None = None



def _mb(n: float) -> float:
    return round(n / MB, 1)


def postgres_worst_case(s: Settings) -> tuple[int, str]:
    backend = s["POSTGRES_WORK_MEM"] + s["QBCTL_POSTGRES_BACKEND_OVERHEAD"]
    conns, av, ts = s["POSTGRES_MAX_CONNECTIONS"], s["POSTGRES_AUTOVACUUM_MAX_WORKERS"], \
        s["TIMESCALEDB_MAX_BACKGROUND_WORKERS"]
    total = s["POSTGRES_SHARED_BUFFERS"] + conns * backend + av * s["POSTGRES_MAINTENANCE_WORK_MEM"] + ts * backend
    text = (f"shared_buffers {_mb(s['POSTGRES_SHARED_BUFFERS']):g} + max_connections {conns} x (work_mem "
            f"{_mb(s['POSTGRES_WORK_MEM']):g} + backend {_mb(s['QBCTL_POSTGRES_BACKEND_OVERHEAD']):g}) + "
            f"autovacuum {av} x maintenance_work_mem {_mb(s['POSTGRES_MAINTENANCE_WORK_MEM']):g} + "
            f"timescaledb workers {ts} x {_mb(backend):g} = {_mb(total):g}MB")
    return total, text


def _pg_fix(s: Settings, over: int) -> str:
    backend = s["POSTGRES_WORK_MEM"] + s["QBCTL_POSTGRES_BACKEND_OVERHEAD"]
    fewer = s["POSTGRES_MAX_CONNECTIONS"] - math.ceil(over / backend)
    options = []
    if fewer >= 3:
        options.append(f"POSTGRES_MAX_CONNECTIONS={fewer}")
    options.append(f"QBCTL_BUDGET_POSTGRES={math.ceil((s['QBCTL_BUDGET_POSTGRES'] + over) / MB)}MB (and take it "
                   "from another share)")
    return "set " + " or ".join(options)


def configured(s: Settings) -> BudgetResult:
    total = s["QBCTL_BUDGET_TOTAL"]
    pg_share, rd_share = s["QBCTL_BUDGET_POSTGRES"], s["QBCTL_BUDGET_REDIS"]
    items = []
    worst, text = postgres_worst_case(s)
    pg = Item("postgres", _mb(pg_share), _mb(worst), derivation=text + f"; container limit {_mb(pg_share):g}MB")
    if worst > pg_share:
        pg.ok, pg.fix = False, _pg_fix(s, worst - pg_share)
    items.append(pg)
    maxmem = s["REDIS_MAX_MEMORY"]
    need = int(maxmem * (1 + REDIS_OVERHEAD))
    rd = Item("redis", _mb(rd_share), _mb(need),
              derivation=f"maxmemory {_mb(maxmem):g} + {int(REDIS_OVERHEAD * 100)}% overhead = {_mb(need):g}MB "
                         f"inside a container limit of {_mb(rd_share):g}MB")
    if need > rd_share:
        fits = int(rd_share / (1 + REDIS_OVERHEAD) / MB)
        rd.ok = False
        rd.fix = (f"set REDIS_MAX_MEMORY={fits}MB (what fits in {_mb(rd_share):g}MB with Redis's overhead), or "
                  f"QBCTL_BUDGET_REDIS={math.ceil(need / MB)}MB")
    items.append(rd)
    items.append(Item("backend", _mb(s["QBCTL_BUDGET_BACKEND"]), derivation="the Python backend (not run by qbctl)"))
    items.append(Item("os", _mb(s["QBCTL_BUDGET_OS"]), derivation="OS and system services"))
    items.append(Item("headroom", _mb(s["QBCTL_BUDGET_HEADROOM"]), derivation="kept free"))
    shares = pg_share + rd_share + s["QBCTL_BUDGET_BACKEND"] + s["QBCTL_BUDGET_OS"] + s["QBCTL_BUDGET_HEADROOM"]
    whole = Item("total", _mb(total), _mb(shares),
                 derivation="postgres + redis + backend + os + headroom shares against the VM's memory")
    if shares > total:
        whole.ok, whole.fix = False, (f"the shares add up to {_mb(shares):g}MB, {_mb(shares - total):g}MB more than "
                                      f"QBCTL_BUDGET_TOTAL: lower a share (QBCTL_BUDGET_*) or raise the total")
    items.append(whole)
    for name, key in (("adminer", "QBCTL_ADMINER_MEMORY"), ("redis-commander", "QBCTL_REDIS_COMMANDER_MEMORY")):
        items.append(Item(name, _mb(s[key]), _mb(s[key]), derivation=f"dev tool, limit {key}", production=False))
    families = [Item(name, _mb(maxmem * w / FAMILY_TOTAL) if w else 0.0,
                     derivation=f"keys {pattern}" + (f", {w}/{FAMILY_TOTAL} of maxmemory" if w else
                                                      ", counted with market data"))
                for name, pattern, w in REDIS_FAMILIES]
    return BudgetResult(_mb(total), items, families)


def family_of(key: str) -> str:
    for name, pattern, _ in REDIS_FAMILIES:
        if key.startswith(pattern[:-1]):
            return name
    return "cache"  # anything else competes with the cache share


def sample_families(client, max_keys: int = 2000) -> tuple[dict[str, int], int, int]:
    """Bytes per key family, extrapolated from at most max_keys sampled keys. (sizes, sampled, dbsize)."""
    dbsize = client.dbsize()
    sizes: dict[str, int] = {}
    sampled = 0
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=500)
        if keys:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.memory_usage(k, samples=5)
            for k, n in zip(keys, pipe.execute(), strict=True):
                fam = family_of(k.decode() if isinstance(k, bytes) else k)
                sizes[fam] = sizes.get(fam, 0) + (n or 0)
            sampled += len(keys)
        if cursor == 0 or sampled >= max_keys:
            break
    if sampled and dbsize > sampled:
        factor = dbsize / sampled
        sizes = {k: int(v * factor) for k, v in sizes.items()}
    return sizes, sampled, dbsize


def apply_measurements(result: BudgetResult, s: Settings, containers: dict[str, int | None],
                       redis_info: dict | None, families: dict[str, int] | None) -> None:
    """Fill measured_mb, mark overruns with their fixes. Pure: the numbers come in as data."""
    by_name = {i.name: i for i in result.items}
    for name, used in containers.items():
        item = by_name.get(name)
        if item is None or used is None:
            continue
        item.measured_mb = _mb(used)
        if used > item.budget_mb * MB and item.production:
            item.ok = False
            item.fix = item.fix or f"{name} uses {_mb(used):g}MB of its {item.budget_mb:g}MB share: lower its memory " \
                                   "settings or raise its QBCTL_BUDGET_* share"
    if redis_info:
        rd = by_name["redis"]
        rd.derivation += (f"; used_memory {_mb(redis_info['used_memory']):g}MB, "
                          f"used_memory_rss {_mb(redis_info['used_memory_rss']):g}MB")
        if rd.measured_mb is None:
            rd.measured_mb = _mb(redis_info["used_memory_rss"])
    if families is not None:
        fam_items = {f.name: f for f in result.redis_families}
        market_and_candles = families.get("market", 0) + families.get("candles", 0)
        for f in result.redis_families:
            used = market_and_candles if f.name == "market" else families.get(f.name, 0)
            f.measured_mb = _mb(used)
            if f.budget_mb and used > f.budget_mb * MB:
                f.ok = False
                f.fix = (f"the {f.name} keys use {_mb(used):g}MB of their {f.budget_mb:g}MB share: "
                         + ("lower MAX_CANDLES_PER_SYMBOL or track fewer symbols" if f.name == "market" else
                            "expire or trim them") + ", or raise REDIS_MAX_MEMORY within its container")
        fam_items["candles"].measured_mb = _mb(families.get("candles", 0))
    problems = [i for i in result.items + result.redis_families if not i.ok]
    result.ok = not problems
    if problems:
        names = ", ".join(p.name for p in problems)
        result.error = CheckFailed(f"over budget: {names}", code="BUDGET_EXCEEDED",
                                   hint="; ".join(f"{p.name}: {p.fix}" for p in problems if p.fix))


def measure(settings: Settings) -> BudgetResult:
    """Configured figures, plus whatever of the running stack can be measured."""
    result = configured(settings)
    containers: dict[str, int | None] = {}
    redis_info = families = None
    try:
        from qbctl.stack import engine

        eng = engine.connect()
        for c in eng.containers(settings.project, running_only=True):
            m = eng.memory(c.id)
            containers[c.service] = m.without_cache if m else None
        if not containers:
            result.not_measured.append(f"containers: project {settings.project} has none running (`qbctl up`)")
    except QbctlError as exc:  # measuring is best effort; say what could not be measured
        result.not_measured.append(f"containers: {exc.message}")
    try:
        from qbctl.db.connect import redis_client

        client = redis_client(settings, timeout=2)
        info = client.info("memory")
        redis_info = {"used_memory": info["used_memory"], "used_memory_rss": info["used_memory_rss"]}
        families, sampled, dbsize = sample_families(client)
        if dbsize > sampled:
            result.not_measured.append(f"redis key families: estimated from {sampled} of {dbsize} keys")
        client.close()
    except Exception as exc:  # noqa: BLE001
        result.not_measured.append(f"redis at {settings.redis.masked()}: {str(exc)[:120]}")
    apply_measurements(result, settings, containers, redis_info, families)
    return result
