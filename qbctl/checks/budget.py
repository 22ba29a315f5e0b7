"""The 1 GB budget: each service's predicted peak against its share, what it uses now, and with
--load what it uses at its peak under the backend's load.

Predicted: qbctl.checks.model, term by term, for the settings: the configuration the next `qbctl up`
applies, whatever runs now; a running server fills in only what they do not decide
(qbctl.checks.running), so the same configuration gets the same prediction up or down. Where what runs
differs from the settings, each value is listed, with whether `up` applies it. Measured: each
container's memory from the engine (without page cache), Redis used_memory and its key families by
sampling. Under --load (qbctl.checks.load): the peak, kills,
evictions and latencies. Every overrun comes with the setting that fixes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qbctl.checks import model, running
from qbctl.config.settings import Settings
from qbctl.config.sizes import MB, fmt_mb
from qbctl.errors import CheckFailed, QbctlError
from qbctl.result import Result

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime


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
    basis: str = ""  # where the prediction's values came from, and when it fits (derivation's tail)
    running_mb: float | None = None  # the model for the values as they run now (what --load measures)
    differences: list[running.Difference] = field(default_factory=list)  # what runs against the settings


@dataclass
class BudgetResult(Result):
    budget_mb: float
    items: list[Item]
    redis_families: list[Item] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)
    load: dict | None = None  # --load: sessions, latencies, evictions, notes
    notes: list[str] = field(default_factory=list)
    ok: bool = True
    error: QbctlError | None = None


def _mb(n: float) -> float:
    return round(n / MB, 1)


# --- the arithmetic ----------------------------------------------------------------------------------
def _pg_fix(s: Settings, pred: model.Prediction, share: int) -> str:
    over = pred.bytes - int(share * (1 - model.CACHE_RESERVE))
    sessions = next(t for t in pred.terms if t.name == "sessions")
    # each connection: a session, and its process slot in shared memory
    per_session = s.values.qbctl_postgres_backend_overhead + s.values.postgres_work_mem + model.SHARED_PER_SLOT
    fewer = s.values.postgres_max_connections - math.ceil(over / per_session)
    options = []
    if fewer >= 4 and sessions.bytes:
        options.append(f"POSTGRES_MAX_CONNECTIONS={fewer}")
    smaller = s.values.postgres_shared_buffers - over
    if smaller >= 32 * MB:
        options.append(f"POSTGRES_SHARED_BUFFERS={int(smaller // MB)}MB")
    needed = math.ceil(pred.bytes / (1 - model.CACHE_RESERVE) / MB)
    options.append(f"QBCTL_BUDGET_POSTGRES={needed}MB (and take it from another share)")
    return "set " + " or ".join(options)


def _redis_fix(share: int, pred: model.Prediction, saves: bool) -> str:
    per_byte = model.REDIS_FRAGMENTATION + (model.REDIS_COW_SHARE if saves else 0)
    fits = int((share * (1 - model.CACHE_RESERVE) - model.REDIS_BASE) / per_byte / MB)
    return (
        f"set REDIS_MAX_MEMORY={fits}MB (what fits in {_mb(share):g}MB with Redis's overhead), or "
        f"QBCTL_BUDGET_REDIS={math.ceil(pred.bytes / (1 - model.CACHE_RESERVE) / MB)}MB"
    )


def _terms(pred: model.Prediction) -> list[dict]:
    return [{"name": t.name, "mb": t.mb, "text": t.text} for t in pred.terms]


def _limit_text(share: int) -> str:
    return (
        f"fits when at most {_mb(share * (1 - model.CACHE_RESERVE)):g}MB: {int(model.CACHE_RESERVE * 100)}% of "
        f"the {_mb(share):g}MB container limit is left to page cache being written"
    )


SETTINGS_TEXT = "values from the settings (the next `qbctl up` applies them)"


def _pg_item(s: Settings, run: running.Running) -> Item:
    share, reading = s.values.qbctl_budget_postgres, run.pg
    values = running.pg_values(s, reading)
    if reading is None:
        basis = (
            f"{SETTINGS_TEXT}; PostgreSQL's defaults for what they do not decide (superuser_reserved_"
            f"connections {values.superuser_reserved_connections}, autovacuum_work_mem -1, max_wal_senders "
            f"{values.max_wal_senders}) and {fmt_mb(values.shared_fixed)} of shared memory no setting sizes"
        )
    else:
        filled = [f"{n} {running.show(n, reading.values[n])}" for n in running.PG_SERVER_DECIDES if n in reading.values]
        filled += [] if reading.has_timescaledb else ["no TimescaleDB in its image"]
        filled += [
            f"{n} {running.show(n, reading.values[n])} (set for the database or its user)" for n in reading.in_data()
        ]
        basis = (
            f"{SETTINGS_TEXT}; from the running server, what they do not decide: {', '.join(filled)}, "
            f"and {fmt_mb(values.shared_fixed)} of shared memory no setting sizes"
        )
    item = _predicted("postgres", model.postgres(values), share, basis)
    if not item.ok:
        item.fix = _pg_fix(s, model.postgres(values), share)
        if reading is not None and reading.in_data():
            names = ", ".join(reading.in_data())
            item.fix = (
                f"reset what is set for the database or its user (ALTER ROLE/DATABASE ... RESET {names}), or {item.fix}"
            )
    if reading is not None:
        item.running_mb = model.postgres(running.running_pg_values(reading, s)).mb
        item.differences = running.differences(
            running.pg_settings_values(s),
            reading.values,
            run.recreated.get("postgres"),
            f"{running.KEPT}",
            tuple(reading.in_data()),
            running.PG_DECIDED,
        )
    return item


def _redis_item(s: Settings, run: running.Running) -> Item:
    share, config = s.values.qbctl_budget_redis, run.redis_config
    values = running.redis_values(s, config)
    saves = "on" if values.saves else "off"
    basis = SETTINGS_TEXT + (
        f"; background saves {saves}: the running server's"
        if config
        else "; background saves on: Redis's own save rules, which qbctl keeps"
    )
    item = _predicted("redis", model.redis(values), share, basis)
    if not item.ok:
        item.fix = _redis_fix(share, model.redis(values), values.saves)
    if config is not None:
        item.running_mb = model.redis(running.redis_values_from_config(config)).mb
        item.differences = running.differences(
            running.redis_settings_values(s),
            running.redis_running_values(config),
            run.recreated.get("redis"),
            f"applied when the container restarts: it was changed at runtime (CONFIG SET), and {running.KEPT}",
            setting_of=running.REDIS_DECIDED,
        )
    return item


def _predicted(name: str, pred: model.Prediction, share: int, basis: str) -> Item:
    basis = f"{basis}; {_limit_text(share)}"
    item = Item(name, _mb(share), pred.mb, derivation=f"{pred.derivation()}; {basis}", basis=basis)
    item.terms = _terms(pred)
    item.ok = model.fits(pred.bytes, share)
    return item


def _limits(s: Settings, run: running.Running, items: dict[str, Item]) -> None:
    """Each container's memory limit against its share (the settings')."""
    limits = {"postgres": s.values.qbctl_budget_postgres, "redis": s.values.qbctl_budget_redis}
    for service, key in running.SHARES.items():
        if service in run.limits:
            items[service].differences += running.differences(
                {"memory limit": limits[service]},
                {"memory limit": run.limits[service]},
                run.recreated.get(service),
                f"not applied by `qbctl up`: the limit was changed on the container (docker update), and "
                f"{running.KEPT}",
                setting_of={"memory limit": key},
            )


def configured(s: Settings, run: running.Running | None = None) -> BudgetResult:
    """Each share against the VM, and each service's predicted peak against its share, for the settings
    (the configuration the next `qbctl up` applies); what runs fills in only what they do not decide,
    and each value where it differs from the settings is listed. Pure."""
    run = run or running.Running()
    total = s.values.qbctl_budget_total
    pg_item, rd_item = _pg_item(s, run), _redis_item(s, run)
    _limits(s, run, {"postgres": pg_item, "redis": rd_item})
    items = [
        pg_item,
        rd_item,
        Item("backend", _mb(s.values.qbctl_budget_backend), derivation="the Python backend (not run by qbctl)"),
        Item("os", _mb(s.values.qbctl_budget_os), derivation="OS and system services"),
        Item("headroom", _mb(s.values.qbctl_budget_headroom), derivation="kept free"),
    ]
    v = s.values
    shares = (
        v.qbctl_budget_postgres
        + v.qbctl_budget_redis
        + v.qbctl_budget_backend
        + v.qbctl_budget_os
        + v.qbctl_budget_headroom
    )
    whole = Item(
        "total",
        _mb(total),
        _mb(shares),
        derivation="postgres + redis + backend + os + headroom shares against the VM's memory",
    )
    if shares > total:
        whole.ok, whole.fix = (
            False,
            (
                f"the shares add up to {_mb(shares):g}MB, {_mb(shares - total):g}MB more than "
                f"QBCTL_BUDGET_TOTAL: lower a share (QBCTL_BUDGET_*) or raise the total"
            ),
        )
    items.append(whole)
    for name, key, limit in (
        ("adminer", "QBCTL_ADMINER_MEMORY", v.qbctl_adminer_memory),
        ("redis-commander", "QBCTL_REDIS_COMMANDER_MEMORY", v.qbctl_redis_commander_memory),
    ):
        items.append(Item(name, _mb(limit), _mb(limit), derivation=f"dev tool, limit {key}", production=False))
    maxmem = s.values.redis_max_memory
    families = [
        Item(
            name,
            _mb(maxmem * w / model.FAMILY_TOTAL) if w else 0.0,
            derivation=f"keys {pattern}"
            + (f", {w}/{model.FAMILY_TOTAL} of maxmemory" if w else ", counted with market data"),
        )
        for name, pattern, w in model.REDIS_FAMILIES
    ]
    result = BudgetResult(_mb(total), items, families)
    for item in (pg_item, rd_item):  # what runs is not judged, but said when it would not fit
        limit = run.limits.get(item.name, int(item.budget_mb * MB))
        if (
            item.ok
            and item.running_mb is not None
            and item.differences
            and not model.fits(int(item.running_mb * MB), limit)
        ):
            result.notes.append(
                f"{item.name} as it runs now (predicted {item.running_mb:g}MB) does not fit its "
                f"{_mb(limit):g}MB limit; the settings do"
            )
    _verdict(result)
    return result


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
                fam = model.family_of(k.decode() if isinstance(k, bytes) else k)
                sizes[fam] = sizes.get(fam, 0) + (n or 0)
            sampled += len(keys)
        if cursor == 0 or sampled >= max_keys:
            break
    if sampled and dbsize > sampled:
        factor = dbsize / sampled
        sizes = {k: int(v * factor) for k, v in sizes.items()}
    return sizes, sampled, dbsize


def apply_measurements(
    result: BudgetResult,
    s: Settings,
    containers: dict[str, int | None],
    redis_info: dict | None,
    families: dict[str, int] | None,
) -> None:
    """Fill measured_mb, mark overruns with their fixes. Pure: the numbers come in as data."""
    by_name = {i.name: i for i in result.items}
    for name, used in containers.items():
        item = by_name.get(name)
        if item is None or used is None:
            continue
        item.measured_mb = _mb(used)
        if used > item.budget_mb * MB and item.production:
            item.ok = False
            item.fix = (
                item.fix
                or f"{name} uses {_mb(used):g}MB of its {item.budget_mb:g}MB share: lower its memory "
                "settings or raise its QBCTL_BUDGET_* share"
            )
    if redis_info:
        rd = by_name["redis"]
        now = (
            f"; now used_memory {_mb(redis_info['used_memory']):g}MB, "
            f"used_memory_rss {_mb(redis_info['used_memory_rss']):g}MB"
        )
        rd.derivation, rd.basis = rd.derivation + now, rd.basis + now
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
                f.fix = (
                    f"the {f.name} keys use {_mb(used):g}MB of their {f.budget_mb:g}MB share: "
                    + (
                        "lower MAX_CANDLES_PER_SYMBOL or track fewer symbols"
                        if f.name == "market"
                        else "expire or trim them"
                    )
                    + ", or raise REDIS_MAX_MEMORY within its container"
                )
        fam_items["candles"].measured_mb = _mb(families.get("candles", 0))
    _verdict(result)


def _verdict(result: BudgetResult) -> None:
    problems = [i for i in result.items + result.redis_families if not i.ok]
    result.ok, result.error = True, None
    if problems:
        names = ", ".join(p.name for p in problems)
        killed = [p for p in problems if p.kills]
        message = (
            f"killed under load: {', '.join(p.name for p in killed)}; " if killed else ""
        ) + f"over budget: {names}"
        result.fail(
            CheckFailed(
                message, code="BUDGET_EXCEEDED", hint="; ".join(f"{p.name}: {p.fix}" for p in problems if p.fix)
            )
        )


# --- measuring -----------------------------------------------------------------------------------------
def measure(settings: Settings, *, rt: Runtime) -> BudgetResult:
    """The prediction for the settings (what runs fills in only what they do not decide), each value where
    what runs differs from them, and whatever of the running stack can be measured now."""
    run = running.Running()
    notes: list[str] = []
    if settings.pg.is_local:  # a server qbctl does not run is not configured by its settings
        run.pg = running.read_pg(settings, rt=rt)
    redis_info, families = _read_redis(settings, run, notes, rt)
    containers, host = _read_containers(settings, run, notes, rt)
    result = configured(settings, run)
    result.not_measured += notes
    if host:  # issue 16: against a VM, its own memory as measured (qbctl.checks.vm), not QBCTL_BUDGET_TOTAL assumed.
        from qbctl.checks import vm

        vm.apply(result, settings, host[0], host[1], containers)
    apply_measurements(result, settings, containers, redis_info, families)
    return result


def _read_redis(
    settings: Settings, run: running.Running, notes: list[str], rt: Runtime
) -> tuple[dict | None, dict | None]:
    """Redis's configuration (into run), its memory now and its key families; what failed into notes."""
    redis_info, families = None, None
    try:
        from qbctl.db.connect import redis_client

        client = redis_client(settings, timeout=2, rt=rt)
        try:
            config = client.config_get("*")
            if settings.redis.is_local:
                run.redis_config = config
            info = client.info("memory")
            redis_info = {"used_memory": info["used_memory"], "used_memory_rss": info["used_memory_rss"]}
            families, sampled, dbsize = sample_families(client)
            if dbsize > sampled:
                notes.append(f"redis key families: estimated from {sampled} of {dbsize} keys")
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - measuring is best effort; say what could not be measured
        notes.append(f"redis at {settings.redis.masked()}: {str(exc)[:120]}")
    return redis_info, families


def _read_containers(
    settings: Settings, run: running.Running, notes: list[str], rt: Runtime
) -> tuple[dict[str, int | None], tuple[str, dict] | None]:
    """Each running container's memory now (and its limit into run), whether the next `up` recreates
    it (into run), and the engine host's memory when the budget is judged against a VM."""
    containers: dict[str, int | None] = {}
    try:
        eng = rt.engine
        live = eng.containers(settings.project, running_only=True)
        run.recreated = _recreated(settings, live)
        for c in live:
            m = eng.memory(c.id)
            # (a temporary helper has no service: keyed None, as it always was; the engine's calls are typed now)
            containers[c.service] = m.without_cache if m else None  # type: ignore[index]
            if m and m.limit:
                run.limits[c.service] = m.limit  # type: ignore[index]
            if m and not m.cache_known:
                notes.append(f"{c.service}: the engine gives no page cache figure; its memory includes page cache")
        if not containers:
            notes.append(f"containers: project {settings.project} has none running (`qbctl up`)")
        if eng.remote or settings.values.qbctl_profile == "production":
            return containers, (eng.host, eng.host_memory(live[0].id if live else None))
    except QbctlError as exc:
        notes.append(f"containers: {exc.message}")
    return containers, None


def _recreated(settings: Settings, live) -> dict[str, bool | None]:
    """Per running service: would the next `qbctl up` recreate its container (its settings changed)?"""
    from qbctl.engine.labels import LABEL_CONFIG
    from qbctl.stack.spec import build_stack

    try:
        specs = {s.name: s for s in build_stack(settings).services}
    except QbctlError:  # `up` itself would refuse these settings
        return {}
    return {c.service: c.labels.get(LABEL_CONFIG) != specs[c.service].config_hash() for c in live if c.service in specs}


def under_load(settings: Settings, options, events, *, rt: Runtime) -> BudgetResult:
    """`qbctl budget --load`: the prediction, then the backend's load on what runs, its peaks and kills,
    the verdict. The load measures the stack as it runs: where that is not what the settings say, the
    model's error is taken against its prediction for what runs, and a note says so."""
    from qbctl.checks import load

    result = measure(settings, rt=rt)
    report = load.Runner(settings, options, events, rt=rt).run()
    by_name = {i.name: i for i in result.items}
    for name, svc in report.services.items():
        item = by_name[name]
        item.measured_mb = _mb(svc.peak_bytes or 0)
        item.peak_with_cache_mb = _mb(svc.peak_with_cache_bytes or 0)
        item.kills = svc.kills
        predicted = item.running_mb if item.running_mb is not None else item.configured_mb
        if item.measured_mb and predicted is not None:
            item.error_pct = round((predicted - item.measured_mb) / item.measured_mb * 100, 1)
        over = (svc.peak_bytes or 0) > item.budget_mb * MB
        if svc.kills or over:
            item.ok = False
            why = (
                "processes were killed by the kernel"
                if svc.kills
                else f"its peak {item.measured_mb:g}MB passed its {item.budget_mb:g}MB share"
            )
            share = int(item.budget_mb * MB)
            item.fix = f"{why}: " + (
                item.fix
                or (
                    _pg_fix(settings, model.postgres(running.pg_values(settings)), share - 1)
                    if name == "postgres"
                    else _redis_fix(share, model.redis(running.redis_values(settings)), True)
                )
            )
    differ = [f"{i.name}: {d.text}" for i in result.items for d in i.differences]
    notes = list(report.notes)
    if differ:
        notes.insert(
            0,
            "the load measured the stack as it runs, which is not what the settings say ("
            + "; ".join(differ)
            + "): the model's error is against its prediction for what runs; after `qbctl up`, "
            "`qbctl budget --load` measures the settings",
        )
    result.load = {
        "seconds": report.seconds,
        "sessions": report.sessions,
        "queries": report.queries,
        "redis": report.redis,
        "notes": notes,
    }
    _verdict(result)
    return result
