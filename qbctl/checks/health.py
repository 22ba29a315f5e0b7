"""qbctl health: every check in parallel, each with its own timeout, so nothing hangs.

Docker (engine, each container: running, restarts, exit code, OOM), PostgreSQL (login,
latency, versions, pending migrations, TimescaleDB jobs that failed, are paused or do not run),
Redis (PING, maxmemory and policy as configured, memory used, evictions, over-long candle
lists), the two UIs (HTTP 200).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qbctl.checks import kills
from qbctl.config.settings import Settings
from qbctl.config.sizes import fmt_mb
from qbctl.errors import CheckFailed, QbctlError
from qbctl.result import Result
from qbctl.stack import probes
from qbctl.stack.spec import build_stack

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

CHECK_TIMEOUT = 2.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    latency_ms: float | None = None  # the round trip of the postgres (SELECT 1) and redis (PING) checks
    data: dict = field(default_factory=dict)
    warn: bool = False  # ok, but worth a look (shown as WARN)


@dataclass
class HealthResult(Result):
    project: str
    checks: list[Check]
    seconds: float = 0.0
    ok: bool = True
    error: QbctlError | None = None


@dataclass(frozen=True, kw_only=True)
class HealthOptions:
    check_timeout: float = CHECK_TIMEOUT  # seconds each check may take
    wait: bool = False  # repeat until healthy or `timeout`
    timeout: float | None = None  # with wait; None: QBCTL_UP_TIMEOUT
    # `ci setup --without-timescaledb`: the migrations judged as that migrate ran them, whatever the database
    # has (the TimescaleDB image creates the extension in it anyway, so files needing it would read as pending)
    without_timescaledb: bool = False


def _timed(fn):
    started = time.monotonic()
    out = fn()
    return out, round((time.monotonic() - started) * 1000, 1)


def check_docker(settings: Settings, timeout: float, rt: Runtime) -> list[Check]:
    stack = build_stack(settings)
    try:
        eng = rt.engine
    except QbctlError as exc:
        return [Check("docker", False, exc.message)]
    found = {c.service: c for c in eng.containers(stack.project)}
    checks = [Check("docker", True, f"engine reachable; project {stack.project}")]
    for name, why in stack.external:
        checks.append(Check(f"{name} container", True, f"not managed: {why}", data={"managed": False}))
    rows: dict[str, Check] = {}

    def one(spec) -> None:
        try:
            _one(spec)
        except QbctlError as exc:  # the engine went away under the check: a failed check, not a traceback
            rows[spec.name] = Check(f"{spec.name} container", False, exc.message)

    def _one(spec) -> None:
        c = found.get(spec.name)
        if c is None:
            rows[spec.name] = (
                Check(f"{spec.name} container", True, "not started (dev UI)", data={"absent": True})
                if spec.ui
                else Check(f"{spec.name} container", False, "no container: `qbctl up` starts it")
            )
            return
        st = eng.state(c.id)
        # A process killed inside a running container leaves the container up: only its cgroup's counter
        # and (for PostgreSQL, whose postmaster then restarts every backend) its log tell.
        # (A UI's main process is the one killed: its state shows that, no need to ask its cgroup.)
        killed = (
            kills.since_start(eng, spec.name, c.id, st.started_at) if st.status == "running" and not spec.ui else []
        )
        data = {
            "state": st.status,
            "restart_count": st.restart_count,
            "exit_code": st.exit_code,
            "oom_killed": st.oom_killed,
            "health": st.health,
            "killed": killed,
        }
        problems = []
        if st.status != "running":
            problems.append(f"{st.status} (exit code {st.exit_code})")
        if st.oom_killed:
            problems.append("killed by its memory limit (OOM)")
        if st.restart_count:
            problems.append(f"restarted {st.restart_count}x")
        if st.health == "unhealthy":
            problems.append("unhealthy")
        problems += killed
        rows[spec.name] = Check(f"{spec.name} container", not problems, "; ".join(problems) or "running", data=data)

    threads = [threading.Thread(target=one, args=(spec,), daemon=True) for spec in stack.services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return checks + [
        rows.get(s.name) or Check(f"{s.name} container", False, f"no answer within {timeout:.1f}s")
        for s in stack.services
    ]


def check_postgres(
    settings: Settings, timeout: float, without_timescaledb: bool = False, *, rt: Runtime
) -> list[Check]:
    from qbctl.db import connect, files, migrate

    try:
        conn, ms = _timed(lambda: connect.connect(settings, timeout=max(2, timeout), rt=rt))
    except QbctlError as exc:
        return [Check("postgres", False, exc.message)]
    with conn:
        rows = connect.psycopg_rows(conn)
        _, q_ms = _timed(lambda: conn.execute("SELECT 1").fetchone())
        state = migrate.read_state(rows)
        version, tsdb = state.server_version, state.timescaledb
        checks = [
            Check(
                "postgres",
                True,
                f"PostgreSQL {version}; SELECT 1 in {q_ms} ms",
                latency_ms=q_ms,
                data={"server_version": version, "timescaledb": tsdb, "connect_ms": ms},
            )
        ]
        try:
            items = migrate.plan(
                files.load(settings),
                migrate.read_applied(rows, state),
                timescaledb=bool(tsdb) and not without_timescaledb,
            )
            pending = [i.file for i in items if i.state in (*migrate.TODO, "changed")]
            checks.append(
                Check(
                    "migrations",
                    not pending,
                    f"{len(pending)} pending or changed: `qbctl db migrate`" if pending else "all applied",
                    data={"pending": pending},
                )
            )
        except Exception as exc:  # noqa: BLE001 - no sql/ here: say so, do not fail the database check
            checks.append(Check("migrations", True, f"not checked: {getattr(exc, 'message', exc)}"))
        if tsdb:
            from qbctl.db import timescale

            sched = timescale.read_scheduler(conn)
            jobs = timescale.read_jobs(conn, sched)
            bad = [j for j in jobs if j["problem"]]
            starved = timescale.slots_problem(sched) if jobs else None
            detail = "; ".join(
                (
                    [
                        f"{len(bad)} failed, paused or not running: "
                        + "; ".join(
                            f"job {j['job_id']} ({j['kind']}{' on ' + j['table'] if j['table'] else ''}): {j['why']}"
                            for j in bad
                        )
                    ]
                    if bad
                    else []
                )
                + ([starved] if starved else [])
            )
            if not detail:
                detail = f"TimescaleDB {tsdb}; no job failed, paused or late; {sched.arithmetic()}"
            checks.append(
                Check(
                    "timescaledb jobs",
                    not bad and not starved,
                    detail,
                    data={
                        "failed": [j["job_id"] for j in bad],
                        "why": {str(j["job_id"]): j["why"] for j in bad},
                        "workers": sched.workers,
                        "schedulers": list(sched.databases),
                        "job_slots": sched.job_slots,
                    },
                )
            )
    return checks


def check_redis(settings: Settings, timeout: float, rt: Runtime) -> list[Check]:
    import redis as redis_lib

    from qbctl.db.connect import redis_client, redis_error

    client = redis_client(settings, timeout, rt=rt)
    try:
        _, ms = _timed(client.ping)
        info = client.info()
        checks = [Check("redis", True, f"Redis {info.get('redis_version')}; PING in {ms} ms", latency_ms=ms)]
        maxmem, policy = int(info.get("maxmemory", 0)), info.get("maxmemory_policy")
        want_mem, want_policy = settings.values.redis_max_memory, settings.values.redis_maxmemory_policy
        same = maxmem == want_mem and policy == want_policy
        checks.append(
            Check(
                "redis config",
                same,
                f"maxmemory {fmt_mb(maxmem)}, {policy}"
                + ("" if same else f"; settings say {fmt_mb(want_mem)}, {want_policy}: {_redis_applied(settings, rt)}"),
                data={"maxmemory": maxmem, "policy": policy},
            )
        )
        used, rss = int(info.get("used_memory", 0)), int(info.get("used_memory_rss", 0))
        evicted = int(info.get("evicted_keys", 0))
        limit = settings.values.qbctl_budget_redis if settings.redis.is_local else None
        near = bool(limit and rss > 0.9 * limit)
        checks.append(
            Check(
                "redis memory",
                True,
                f"{fmt_mb(used)} of maxmemory {fmt_mb(maxmem)} used ({evicted} keys "
                f"evicted); RSS {fmt_mb(rss)}"
                + (f" of its container's {fmt_mb(limit)} limit" if limit else "")
                + (
                    "; over 90% of the limit: the kernel kills Redis at the limit (`qbctl budget` shows "
                    "why, REDIS_MAX_MEMORY lowers it)"
                    if near
                    else ""
                ),
                data={"used_memory": used, "used_memory_rss": rss, "evicted_keys": evicted},
                warn=near,
            )
        )
        cap = settings.values.max_candles_per_symbol
        long_lists = _long_candle_lists(client, cap, deadline=time.monotonic() + timeout / 2)
        checks.append(
            Check(
                "candle lists",
                not long_lists,
                (f"{len(long_lists)} longer than MAX_CANDLES_PER_SYMBOL={cap}: " + ", ".join(long_lists[:5]))
                if long_lists
                else f"none over {cap}",
                data={"over": long_lists},
            )
        )
        return checks
    except (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError) as exc:
        return [Check("redis", False, redis_error(exc, settings))]
    except redis_lib.RedisError as exc:
        return [Check("redis", False, str(exc)[:200])]
    finally:
        client.close()


def _redis_applied(settings: Settings, rt: Runtime) -> str:
    """Whether the next `up` gives Redis its settings: only when it recreates the container (a value set
    at runtime with CONFIG SET stays in a container `up` keeps)."""
    if not settings.redis.is_local:
        return "qbctl does not run this Redis"
    from qbctl.engine.labels import LABEL_CONFIG

    try:
        (c,) = rt.engine.containers(settings.project, "redis", running_only=True)
        kept = c.labels.get(LABEL_CONFIG) == build_stack(settings).get("redis").config_hash()
    except (QbctlError, ValueError):  # no engine, or no (single) container: the usual case, said plainly
        kept = False
    if not kept:
        return "`qbctl up` recreates it"
    return "changed at runtime (CONFIG SET): `qbctl up` keeps the container, `qbctl down && qbctl up` recreates it"


def _long_candle_lists(client, cap: int, deadline: float, limit: int = 5000) -> list[str]:
    over, seen, cursor = [], 0, 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match="candles:*", count=1000)
        if keys:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.llen(k)
            for k, n in zip(keys, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(n, int) and n > cap:
                    over.append(k.decode() if isinstance(k, bytes) else k)
            seen += len(keys)
        if cursor == 0 or seen >= limit or time.monotonic() > deadline:
            return over


def check_uis(settings: Settings, timeout: float, rt: Runtime) -> list[Check]:
    stack = build_stack(settings)
    out = []
    for spec in stack.services:
        if spec.ui:
            p = spec.ports[0]
            r = probes.http(p.host_ip, p.host, timeout, rt=rt)
            out.append(Check(spec.name, r.ok, r.detail))
    return out


CHECKS = (("docker", check_docker), ("postgres", check_postgres), ("redis", check_redis), ("ui", check_uis))


def check(settings: Settings, options: HealthOptions = HealthOptions(), *, rt: Runtime) -> HealthResult:
    """Once, or with options.wait until healthy or the timeout."""
    if not options.wait:
        return run(settings, options.check_timeout, options.without_timescaledb, rt=rt)
    deadline = time.monotonic() + (options.timeout or settings.values.qbctl_up_timeout)
    while True:
        result = run(settings, options.check_timeout, options.without_timescaledb, rt=rt)
        if result.ok or time.monotonic() >= deadline:
            return result
        time.sleep(0.25)


def run(
    settings: Settings, timeout: float = CHECK_TIMEOUT, without_timescaledb: bool = False, *, rt: Runtime
) -> HealthResult:
    t0 = time.monotonic()
    timeout = _allow_for_latency(timeout, rt)
    # One after the other, the three drivers import faster than in four threads fighting for the GIL.
    # The checks' deadline starts after the imports: they are not the servers' time to answer.
    for driver in ("docker", "psycopg", "redis"):
        importlib.import_module(driver)
    started = time.monotonic()

    results: dict[str, list[Check]] = {}

    def worker(name, fn):
        try:
            results[name] = fn(settings, timeout)
        except Exception as exc:  # noqa: BLE001 - a broken check is a failed check, not a crash
            from qbctl.db.connect import escaped_error

            known = escaped_error(exc, f"the {name} check")
            text = known.message if known else f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            results[name] = [Check(name, False, text[:300])]

    special = {
        "postgres": lambda s, t: check_postgres(s, t, without_timescaledb, rt=rt),
        "docker": lambda s, t: check_docker(s, t, rt),
        "redis": lambda s, t: check_redis(s, t, rt),
        "ui": lambda s, t: check_uis(s, t, rt),
    }
    checks_run = [(name, special.get(name, fn)) for name, fn in CHECKS]
    threads = [threading.Thread(target=worker, args=c, daemon=True) for c in checks_run]
    for t in threads:
        t.start()
    deadline = started + timeout + 0.3
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    checks = []
    for name, _ in CHECKS:
        checks += results[name] if name in results else [Check(name, False, f"no answer within {timeout:.1f}s")]
    checks = _drop_ui_checks_without_container(checks)
    result = HealthResult(settings.project, checks, round(time.monotonic() - t0, 3))
    bad = [c.name for c in checks if not c.ok]
    if bad:
        result.fail(
            CheckFailed(
                "unhealthy: " + ", ".join(bad),
                code="UNHEALTHY",
                hint="`qbctl status` and `qbctl logs SERVICE` show more",
            )
        )
    return result


def _allow_for_latency(timeout: float, rt: Runtime) -> float:
    """Each check's time, grown by the measured round trips to a remote engine. Its ssh connection is
    made first (an ssh failure is the command's error, exit 3: nothing could be checked through it)."""
    try:
        return rt.allow_for_latency(timeout)
    except QbctlError as exc:
        if exc.code == "SSH_FAILED":
            raise
        return timeout  # the docker check reports an unreachable engine itself


def _drop_ui_checks_without_container(checks: list[Check]) -> list[Check]:
    absent = {c.name.removesuffix(" container") for c in checks if c.data.get("absent")}
    return [c for c in checks if c.name not in absent]
