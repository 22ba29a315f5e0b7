"""The 1 GB budget: each service's predicted peak against its share, what it uses now, and with
--load what it uses at its peak under the backend's load.

Predicted: qbctl.checks.model, term by term, from the values in force (the running server's, else
the settings'). Measured: each container's memory from the engine (without page cache), Redis
used_memory and its key families by sampling. Under --load (qbctl.checks.load): the peak, kills,
evictions and latencies. Every overrun comes with the setting that fixes it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from qbctl.checks import model
from qbctl.config.settings import Settings
from qbctl.config.sizes import MB
from qbctl.errors import CheckFailed, QbctlError
from qbctl.result import Result

# The team's split of Redis memory (50/30/20/50 of 150 MB), applied to maxmemory.
REDIS_FAMILIES = (("market", "market:*", 50), ("candles", "candles:*", 0), ("indicators", "indicators:*", 30),
                  ("events", "events:*", 20), ("cache", "cache:*", 50))
FAMILY_TOTAL = sum(w for _, _, w in REDIS_FAMILIES)
PG_SETTINGS = ("shared_buffers", "wal_buffers", "work_mem", "hash_mem_multiplier", "maintenance_work_mem",
               "autovacuum_work_mem", "autovacuum_max_workers", "max_connections", "superuser_reserved_connections",
               "max_parallel_workers_per_gather", "max_parallel_workers", "temp_buffers",
               "timescaledb.max_background_workers")


@dataclass
class Item:
    name: str
    budget_mb: float
    configured_mb: float | None = None  # the model's predicted peak
    measured_mb: float | None = None  # now, or with --load the peak (without page cache)
    ok: bool = True
    derivation: str = ""
    fix: str | None = None
    production: bool = True  # False: a dev tool, outside the 1 GB budget
    peak_with_cache_mb: float | None = None  # --load: the peak with reclaimable page cache
    kills: list[str] = field(default_factory=list)  # --load: what the kernel killed, with its evidence
    error_pct: float | None = None  # --load: (predicted - measured) / measured
    terms: list[dict] = field(default_factory=list)  # the prediction, term by term: name, mb, text


@dataclass
class BudgetResult(Result):
    budget_mb: float
    items: list[Item]
    redis_families: list[Item] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)
    load: dict | None = None  # --load: sessions, latencies, evictions, notes
    ok: bool = True
    error: QbctlError | None = None


def _mb(n: float) -> float:
    return round(n / MB, 1)


# --- the values in force -----------------------------------------------------------------------------
def pg_values(s: Settings) -> model.PgValues:
    """What qbctl passes to the server (stack.spec.postgres_args), with the schedulers the image makes."""
    from qbctl.stack.spec import postgres_args, scheduler_databases

    args = postgres_args(s)
    return model.PgValues(
        shared_buffers=s["POSTGRES_SHARED_BUFFERS"], wal_buffers=_pg_bytes(args["wal_buffers"]),
        work_mem=s["POSTGRES_WORK_MEM"], hash_mem_multiplier=float(args["hash_mem_multiplier"]),
        maintenance_work_mem=s["POSTGRES_MAINTENANCE_WORK_MEM"], autovacuum_work_mem=-1,
        autovacuum_max_workers=s["POSTGRES_AUTOVACUUM_MAX_WORKERS"], max_connections=s["POSTGRES_MAX_CONNECTIONS"],
        superuser_reserved_connections=3, max_parallel_workers_per_gather=s["POSTGRES_MAX_PARALLEL_WORKERS"],
        max_parallel_workers=s["POSTGRES_MAX_PARALLEL_WORKERS"], temp_buffers=_pg_bytes(args["temp_buffers"]),
        tsdb_background_workers=s["TIMESCALEDB_MAX_BACKGROUND_WORKERS"],
        backend=s["QBCTL_POSTGRES_BACKEND_OVERHEAD"], schedulers=len(scheduler_databases(s)))


def _pg_bytes(text: str) -> int:
    from qbctl.config.sizes import parse_size

    return parse_size(text)


def pg_values_from_rows(rows: list[tuple], shared_allocated: int | None, backend: int,
                        largest_table_pages: int | None = None, schedulers: int = 1) -> model.PgValues:
    """The values in force, from `SELECT name, setting, unit FROM pg_settings`. Pure."""
    units = {"8kB": 8192, "kB": 1024, "MB": MB, "B": 1, None: 1, "": 1}
    v: dict[str, float] = {}
    for name, setting, unit in rows:
        number = float(setting)
        v[name] = number * units.get(unit, 1) if number >= 0 else number
    return model.PgValues(
        shared_buffers=int(v["shared_buffers"]), wal_buffers=int(v["wal_buffers"]), work_mem=int(v["work_mem"]),
        hash_mem_multiplier=v.get("hash_mem_multiplier", 2.0), maintenance_work_mem=int(v["maintenance_work_mem"]),
        autovacuum_work_mem=int(v.get("autovacuum_work_mem", -1)),
        autovacuum_max_workers=int(v["autovacuum_max_workers"]), max_connections=int(v["max_connections"]),
        superuser_reserved_connections=int(v.get("superuser_reserved_connections", 3)),
        max_parallel_workers_per_gather=int(v.get("max_parallel_workers_per_gather", 2)),
        max_parallel_workers=int(v.get("max_parallel_workers", 8)), temp_buffers=int(v.get("temp_buffers", 8 * MB)),
        tsdb_background_workers=int(v.get("timescaledb.max_background_workers", 0)), backend=backend,
        shared_allocated=shared_allocated, largest_table_pages=largest_table_pages, schedulers=schedulers)


def read_pg_values(settings: Settings) -> model.PgValues | None:
    """The running server's values, or None when it cannot be asked."""
    from qbctl.db import connect

    try:
        with connect.connect(settings, timeout=2) as conn:
            rows = conn.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)",
                                (list(PG_SETTINGS),)).fetchall()
            shared = conn.execute("SELECT sum(allocated_size)::bigint FROM pg_shmem_allocations").fetchone()[0]
            pages = conn.execute("SELECT max(relpages) FROM pg_class WHERE relkind IN ('r', 'm')").fetchone()[0]
            schedulers = conn.execute("SELECT count(*) FROM pg_stat_activity"
                                      " WHERE backend_type = 'TimescaleDB Background Worker Scheduler'").fetchone()[0]
    except QbctlError:
        return None
    return pg_values_from_rows(rows, shared, settings["QBCTL_POSTGRES_BACKEND_OVERHEAD"], pages, schedulers)


def redis_values(s: Settings) -> model.RedisValues:
    return model.RedisValues(s["REDIS_MAX_MEMORY"], saves=True)  # qbctl keeps Redis's own save rules


def redis_values_from_config(config: dict) -> model.RedisValues:
    """From CONFIG GET maxmemory / save / appendonly. Pure."""
    saves = bool((config.get("save") or "").strip()) or config.get("appendonly") == "yes"
    return model.RedisValues(int(config.get("maxmemory") or 0), saves)


# --- the arithmetic ----------------------------------------------------------------------------------
def _pg_fix(s: Settings, pred: model.Prediction, share: int) -> str:
    over = pred.bytes - int(share * (1 - model.CACHE_RESERVE))
    sessions = next(t for t in pred.terms if t.name == "sessions")
    per_session = s["QBCTL_POSTGRES_BACKEND_OVERHEAD"] + s["POSTGRES_WORK_MEM"]
    fewer = s["POSTGRES_MAX_CONNECTIONS"] - math.ceil(over / per_session)
    options = []
    if fewer >= 4 and sessions.bytes:
        options.append(f"POSTGRES_MAX_CONNECTIONS={fewer}")
    smaller = s["POSTGRES_SHARED_BUFFERS"] - over
    if smaller >= 32 * MB:
        options.append(f"POSTGRES_SHARED_BUFFERS={int(smaller // MB)}MB")
    needed = math.ceil(pred.bytes / (1 - model.CACHE_RESERVE) / MB)
    options.append(f"QBCTL_BUDGET_POSTGRES={needed}MB (and take it from another share)")
    return "set " + " or ".join(options)


def _redis_fix(share: int, pred: model.Prediction, saves: bool) -> str:
    per_byte = model.REDIS_FRAGMENTATION + (model.REDIS_COW_SHARE if saves else 0)
    fits = int((share * (1 - model.CACHE_RESERVE) - model.REDIS_BASE) / per_byte / MB)
    return (f"set REDIS_MAX_MEMORY={fits}MB (what fits in {_mb(share):g}MB with Redis's overhead), or "
            f"QBCTL_BUDGET_REDIS={math.ceil(pred.bytes / (1 - model.CACHE_RESERVE) / MB)}MB")


def _terms(pred: model.Prediction) -> list[dict]:
    return [{"name": t.name, "mb": t.mb, "text": t.text} for t in pred.terms]


def _limit_text(share: int) -> str:
    return (f"fits when at most {_mb(share * (1 - model.CACHE_RESERVE)):g}MB: {int(model.CACHE_RESERVE * 100)}% of "
            f"the {_mb(share):g}MB container limit is left to page cache being written")


def configured(s: Settings, pg: model.PgValues | None = None, rd: model.RedisValues | None = None) -> BudgetResult:
    """Each share against the VM, and each service's predicted peak against its share. Pure."""
    total = s["QBCTL_BUDGET_TOTAL"]
    pg_share, rd_share = s["QBCTL_BUDGET_POSTGRES"], s["QBCTL_BUDGET_REDIS"]
    pg_pred = model.postgres(pg or pg_values(s), "the running server" if pg else "settings")
    pg_item = Item("postgres", _mb(pg_share), pg_pred.mb, derivation=f"{pg_pred.derivation()}; values from "
                   f"{pg_pred.source}; {_limit_text(pg_share)}")
    pg_item.terms = _terms(pg_pred)
    if not model.fits(pg_pred.bytes, pg_share):
        pg_item.ok, pg_item.fix = False, _pg_fix(s, pg_pred, pg_share)
    rd_values = rd or redis_values(s)
    rd_pred = model.redis(rd_values, "the running server" if rd else "settings")
    rd_item = Item("redis", _mb(rd_share), rd_pred.mb, derivation=f"{rd_pred.derivation()}; values from "
                   f"{rd_pred.source}; {_limit_text(rd_share)}")
    rd_item.terms = _terms(rd_pred)
    if not model.fits(rd_pred.bytes, rd_share):
        rd_item.ok, rd_item.fix = False, _redis_fix(rd_share, rd_pred, rd_values.saves)
    items = [pg_item, rd_item,
             Item("backend", _mb(s["QBCTL_BUDGET_BACKEND"]), derivation="the Python backend (not run by qbctl)"),
             Item("os", _mb(s["QBCTL_BUDGET_OS"]), derivation="OS and system services"),
             Item("headroom", _mb(s["QBCTL_BUDGET_HEADROOM"]), derivation="kept free")]
    shares = pg_share + rd_share + s["QBCTL_BUDGET_BACKEND"] + s["QBCTL_BUDGET_OS"] + s["QBCTL_BUDGET_HEADROOM"]
    whole = Item("total", _mb(total), _mb(shares),
                 derivation="postgres + redis + backend + os + headroom shares against the VM's memory")
    if shares > total:
        whole.ok, whole.fix = False, (f"the shares add up to {_mb(shares):g}MB, {_mb(shares - total):g}MB more than "
                                      f"QBCTL_BUDGET_TOTAL: lower a share (QBCTL_BUDGET_*) or raise the total")
    items.append(whole)
    for name, key in (("adminer", "QBCTL_ADMINER_MEMORY"), ("redis-commander", "QBCTL_REDIS_COMMANDER_MEMORY")):
        items.append(Item(name, _mb(s[key]), _mb(s[key]), derivation=f"dev tool, limit {key}", production=False))
    maxmem = rd_values.maxmemory
    families = [Item(name, _mb(maxmem * w / FAMILY_TOTAL) if w else 0.0,
                     derivation=f"keys {pattern}" + (f", {w}/{FAMILY_TOTAL} of maxmemory" if w else
                                                      ", counted with market data"))
                for name, pattern, w in REDIS_FAMILIES]
    result = BudgetResult(_mb(total), items, families)
    _verdict(result)
    return result


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
        rd.derivation += (f"; now used_memory {_mb(redis_info['used_memory']):g}MB, "
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
    _verdict(result)


def _verdict(result: BudgetResult) -> None:
    problems = [i for i in result.items + result.redis_families if not i.ok]
    result.ok, result.error = True, None
    if problems:
        names = ", ".join(p.name for p in problems)
        killed = [p for p in problems if p.kills]
        message = (f"killed under load: {', '.join(p.name for p in killed)}; " if killed else "") + \
            f"over budget: {names}"
        result.fail(CheckFailed(message, code="BUDGET_EXCEEDED",
                                hint="; ".join(f"{p.name}: {p.fix}" for p in problems if p.fix)))


# --- measuring -----------------------------------------------------------------------------------------
def measure(settings: Settings) -> BudgetResult:
    """The prediction from the values in force, plus whatever of the running stack can be measured now."""
    pg = read_pg_values(settings) if settings.pg.is_local else None
    rd_config, redis_info, families = None, None, None
    not_measured: list[str] = []
    try:
        from qbctl.db.connect import redis_client

        client = redis_client(settings, timeout=2)
        try:
            rd_config = client.config_get("*")
            info = client.info("memory")
            redis_info = {"used_memory": info["used_memory"], "used_memory_rss": info["used_memory_rss"]}
            families, sampled, dbsize = sample_families(client)
            if dbsize > sampled:
                not_measured.append(f"redis key families: estimated from {sampled} of {dbsize} keys")
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - measuring is best effort; say what could not be measured
        not_measured.append(f"redis at {settings.redis.masked()}: {str(exc)[:120]}")
    result = configured(settings, pg, redis_values_from_config(rd_config) if rd_config else None)
    result.not_measured += not_measured
    containers: dict[str, int | None] = {}
    try:
        from qbctl.stack import engine

        eng = engine.connect()
        running = eng.containers(settings.project, running_only=True)
        for c in running:
            m = eng.memory(c.id)
            containers[c.service] = m.without_cache if m else None
            if m and not m.cache_known:
                result.not_measured.append(f"{c.service}: the engine gives no page cache figure; its memory "
                                           "includes page cache")
        if not containers:
            result.not_measured.append(f"containers: project {settings.project} has none running (`qbctl up`)")
        # issue 16: against a VM, its own memory as measured (qbctl.checks.vm), not QBCTL_BUDGET_TOTAL assumed.
        if eng.remote or settings["QBCTL_PROFILE"] == "production":
            from qbctl.checks import vm

            vm.apply(result, settings, eng.host, eng.host_memory(running[0].id if running else None), containers)
    except QbctlError as exc:
        result.not_measured.append(f"containers: {exc.message}")
    apply_measurements(result, settings, containers, redis_info, families)
    return result


def under_load(settings: Settings, options, events) -> BudgetResult:
    """`qbctl budget --load`: the prediction, then the backend's load, its peaks and kills, the verdict."""
    from qbctl.checks import load

    result = measure(settings)
    report = load.Runner(settings, options, events).run()
    by_name = {i.name: i for i in result.items}
    for name, svc in report.services.items():
        item = by_name[name]
        item.measured_mb = _mb(svc.peak_bytes or 0)
        item.peak_with_cache_mb = _mb(svc.peak_with_cache_bytes or 0)
        item.kills = svc.kills
        if item.measured_mb:
            item.error_pct = round((item.configured_mb - item.measured_mb) / item.measured_mb * 100, 1)
        over = (svc.peak_bytes or 0) > item.budget_mb * MB
        if svc.kills or over:
            item.ok = False
            why = "processes were killed by the kernel" if svc.kills else \
                f"its peak {item.measured_mb:g}MB passed its {item.budget_mb:g}MB share"
            item.fix = f"{why}: " + (item.fix or (_pg_fix(settings, model.postgres(pg_values(settings)),
                                                          int(item.budget_mb * MB) - 1) if name == "postgres" else
                                                  _redis_fix(int(item.budget_mb * MB),
                                                             model.redis(redis_values(settings)), True)))
    result.load = {"seconds": report.seconds, "sessions": report.sessions, "queries": report.queries,
                   "redis": report.redis, "notes": report.notes}
    _verdict(result)
    return result
