"""up / down / reset / status: observed state -> plan -> execute -> wait, as data.

Progress is reported through `events(kind, service, text)`; nothing here prints.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from qbctl.result import Result
from qbctl.stack import engine
from qbctl.db import connect as pg
from qbctl.stack import ports
from qbctl.stack import probes
from qbctl.stack import volumes
from qbctl.errors import QbctlError
from qbctl.stack.lock import project_lock
from qbctl.stack.plan import Plan, make_plan
from qbctl.config.settings import Settings
from qbctl.stack.spec import ServiceSpec, Stack, build_stack, exposure_warnings, select

POLL = 0.03  # seconds between readiness probes
STATE_EVERY = 0.25  # seconds between container state checks while waiting
LOG_LINES = 20


def _noop(*_):
    pass


@dataclass
class ServiceResult:
    name: str
    image: str
    ports: list[str]
    action: str = "keep"
    ready: bool = False
    seconds: float | None = None
    detail: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    logs: list[str] = field(default_factory=list)


@dataclass
class UpResult(Result):
    project: str
    services: list[ServiceResult]
    plan: str
    timings: dict[str, float]
    external: list[dict]
    ok: bool = False
    error: dict | None = None
    exit_code: int = 1  # 2 when the settings, not the stack, are wrong



class Unready(QbctlError):
    exit_code = 1
    code = "UNHEALTHY"


def _port_text(spec: ServiceSpec) -> list[str]:
    return [f"{p.host_ip}:{p.host}" for p in spec.ports]


def up(settings: Settings, services: list[str] | None = None, no_ui: bool = False,
       timeout: float | None = None, events=_noop) -> UpResult:
    t0 = time.monotonic()
    timeout = timeout or settings["QBCTL_UP_TIMEOUT"]
    stack = build_stack(settings)
    desired = select(stack, services, no_ui)
    for warning in exposure_warnings(settings):
        events("warn", "", warning)
    client = engine.connect()
    timings: dict[str, float] = {}
    with project_lock(stack.project, on_wait=lambda text: events("wait", "", text)):
        observed = engine.observe(client, stack.project)
        # Ports first, before any pull: a busy port is reported in a second, not after a download.
        _check_ports(client, stack, make_plan(desired, observed, {}), desired)
        images = _ensure_images(client, desired, events)
        timings["images"] = round(time.monotonic() - t0, 3)
        plan = make_plan(desired, observed, {img: info["Id"] for img, info in images.items()})
        changes = plan.changes()
        if changes:
            engine.ensure_network(client, stack)
            changing = [s for s in desired if s.name in {c.service for c in changes}]
            made_by = {s.name: volumes.created_by(engine.image_env(images[s.image])) for s in changing
                       if s.name == "postgres"}
            existing = engine.ensure_volumes(client, stack, changing, made_by)
            for spec in changing:
                for vol, _ in spec.volumes:
                    if spec.name == "postgres" and vol in existing:
                        warning = volumes.check(vol, existing[vol], spec.image, engine.image_env(images[spec.image]))
                        if warning:
                            events("warn", spec.name, warning)
        cids = {name: o.container_id for name, o in observed.items()}
        results = {s.name: ServiceResult(s.name, s.image, _port_text(s)) for s in desired}
        for step in plan.steps:
            results[step.service].action = step.action
        _execute(client, stack, plan, cids, events)
        timings["start"] = round(time.monotonic() - t0, 3)
        trusted = {n for n, o in observed.items() if o.health == "healthy"}
        _wait(client, settings, desired, cids, results, plan, trusted, t0 + timeout, events, t0)
    timings["ready"] = round(time.monotonic() - t0, 3)
    ok = all(r.ready for r in results.values())
    result = UpResult(stack.project, [results[s.name] for s in desired], str(plan), timings,
                      [{"service": n, "reason": why} for n, why in stack.external], ok)
    if not ok:
        limits = {s.name: s.mem_setting for s in desired}
        error = _unready_error(result, timeout, limits)
        result.error, result.exit_code = error.to_dict(), int(error.exit_code)
    return result


def _execute(client, stack: Stack, plan: Plan, cids: dict[str, str], events) -> None:
    """Carry out the plan's changes one by one, in start order (PostgreSQL, on the critical path,
    first). Measured on two cores (bench/): starting the others all at once competes with
    PostgreSQL's initdb for the CPU and makes the whole stack ready later, not sooner."""
    for step in plan.changes():
        spec = stack.get(step.service)
        if step.action == "recreate":
            events("step", step.service, f"recreating ({step.reason})")
            engine.remove_container(client, cids[step.service])
        if step.action in ("create", "recreate"):
            cids[step.service] = engine.create_and_start(client, stack, spec)
        else:
            engine.start(client, cids[step.service])
        events("step", step.service, "started")


def _ensure_images(client, desired: list[ServiceSpec], events) -> dict[str, dict]:
    """Every image present (pulled when missing); their inspect data by reference."""
    infos: dict[str, dict] = {}
    for spec in desired:
        if spec.image in infos:
            continue
        found = engine.image_info(client, spec.image)
        if not found:
            events("pull", spec.name, f"pulling {spec.image}")
            found = engine.pull(client, spec, on_progress=lambda name, ev: events("pull-progress", name, ev))
        infos[spec.image] = found
    return infos


def _check_ports(client, stack: Stack, plan: Plan, desired: list[ServiceSpec]) -> None:
    to_bind = []
    for step in plan.changes():
        spec = stack.get(step.service)
        if step.action == "recreate":
            continue  # its old container holds the port until it is replaced
        to_bind += [(spec.name, p) for p in spec.ports]
    if to_bind:
        ports.check_free(to_bind, who_else=lambda port: _container_on_port(client, port, stack.project))


def _container_on_port(client, port: int, project: str) -> tuple[str | None, bool]:
    """(who publishes the port, whether it is this project's own container)."""
    for c in client.api.containers(filters={"publish": str(port)}):
        owner = (c.get("Labels") or {}).get("io.qbctl.project")
        name = c["Names"][0].lstrip("/")
        return f"container {name}" + (f" (qbctl project {owner})" if owner else ""), owner == project
    return None, False


def _wait(client, settings, desired, cids, results, plan, trusted, deadline, events, t0) -> None:
    """Probe every service in its own thread; stop at the first that cannot become ready."""
    failed = threading.Event()
    threads = []
    for spec in desired:
        res = results[spec.name]
        if res.action == "keep" and spec.name in trusted:
            res.ready, res.seconds, res.detail = True, 0.0, "already ready"
            continue
        t = threading.Thread(target=_wait_one, daemon=True,
                             args=(client, settings, spec, cids[spec.name], res, deadline, failed, events, t0))
        t.start()
        threads.append(t)
    for t in threads:
        while t.is_alive():
            t.join(0.1)  # short joins keep Ctrl-C responsive


def _wait_one(client, settings, spec, cid, res: ServiceResult, deadline, failed, events, t0) -> None:
    next_state = 0.0
    last = probes.ProbeResult(False, "not probed yet")
    while not failed.is_set():
        now = time.monotonic()
        if now >= next_state:
            st = engine.state(client, cid)
            if st.status in ("exited", "dead") or st.restart_count > 0 or st.oom_killed:
                res.exit_code, res.oom_killed = st.exit_code, st.oom_killed or st.exit_code == 137
                why = "was killed: out of memory (exit 137)" if res.oom_killed else f"exited with code {st.exit_code}"
                res.detail = f"container {why}" + (" and is restarting" if st.status == "restarting" else "")
                res.logs = engine.tail_logs(client, cid, LOG_LINES)
                failed.set()
                events("failed", spec.name, res.detail)
                return
            next_state = now + STATE_EVERY
        last = probes.probe(spec, settings, timeout=max(0.2, min(2.0, deadline - now)))
        if last.ok:
            res.ready, res.seconds, res.detail = True, round(time.monotonic() - t0, 3), last.detail
            events("ready", spec.name, f"ready in {res.seconds:.2f}s")
            return
        if last.fatal:
            res.detail = last.detail
            res.logs = engine.tail_logs(client, cid, LOG_LINES)
            failed.set()
            events("failed", spec.name, res.detail)
            return
        if time.monotonic() >= deadline:
            res.detail = f"not ready after the timeout: {last.detail}"
            res.logs = engine.tail_logs(client, cid, LOG_LINES)
            failed.set()
            return
        time.sleep(POLL)


def _unready_error(result: UpResult, timeout: float, limits: dict[str, str]) -> QbctlError:
    bad = [s for s in result.services if not s.ready and s.detail and "not probed" not in s.detail]
    bad = bad or [s for s in result.services if not s.ready]
    first = bad[0]
    if first.name == "postgres":
        known = volumes.classify(first.logs, f"{result.project}_pgdata")
        if known:
            return known
    if first.oom_killed:
        return Unready(f"{first.name}: {first.detail}", code="OOM_KILLED",
                       hint=f"raise its memory limit ({limits[first.name]}) or lower its "
                            "memory settings; `qbctl budget` shows the arithmetic")
    if first.name == "postgres" and pg.bad_url(first.detail):
        return pg.url_error(first.detail)  # the server runs; the URL is what is wrong
    if "password authentication failed" in first.detail:
        return Unready(f"{first.name}: {first.detail}", code="AUTH_FAILED",
                       hint="the data volume was initialised with another password: put the old one back in "
                            "DATABASE_URL, or `qbctl reset` to start from an empty volume (deletes its data)")
    if "timeout" in first.detail:
        return Unready(f"{first.name} was not ready within {timeout:.0f}s: {first.detail}", code="TIMEOUT",
                       hint="`qbctl logs " + first.name + "` shows why; raise --timeout if it is only slow")
    return Unready(f"{first.name}: {first.detail}", hint="its last log lines are shown above; "
                   f"`qbctl logs {first.name}` has the rest")


@dataclass
class DownResult(Result):
    project: str
    removed: list[str]
    volumes_removed: list[str] = field(default_factory=list)
    network_removed: bool = False
    ok: bool = True



def down(settings: Settings, events=_noop) -> DownResult:
    client = engine.connect()
    project = settings.project
    with project_lock(project, on_wait=lambda text: events("wait", "", text)):
        removed = _remove_containers(client, project, events)
        net = _remove_networks(client, project)
    return DownResult(project, removed, network_removed=net)


def reset(settings: Settings, events=_noop) -> DownResult:
    """Remove this project's containers, volumes and network: only objects labelled with it."""
    client = engine.connect()
    project = settings.project
    with project_lock(project, on_wait=lambda text: events("wait", "", text)):
        removed = _remove_containers(client, project, events)
        net = _remove_networks(client, project)
        vols = []
        for v in client.api.volumes(filters=engine.project_filter(project)).get("Volumes") or []:
            client.api.remove_volume(v["Name"], force=True)
            vols.append(v["Name"])
            events("step", "", f"removed volume {v['Name']}")
    return DownResult(project, removed, vols, net)


def _remove_containers(client, project: str, events) -> list[str]:
    removed = []
    containers = client.api.containers(all=True, filters=engine.project_filter(project))
    # UIs first, then the servers they depend on.
    containers.sort(key=lambda c: (c.get("Labels") or {}).get("io.qbctl.service") in ("postgres", "redis"))
    threads = [threading.Thread(target=engine.remove_container, args=(client, c["Id"])) for c in containers]
    for t in threads:
        t.start()
    for t, c in zip(threads, containers):
        t.join()
        name = c["Names"][0].lstrip("/")
        removed.append(name)
        events("step", "", f"removed {name}")
    return removed


def _remove_networks(client, project: str) -> bool:
    nets = client.api.networks(filters=engine.project_filter(project))
    for n in nets:
        client.api.remove_network(n["Id"])
    return bool(nets)


@dataclass
class ServiceStatus:
    name: str
    state: str
    health: str | None
    ports: list[str]
    image: str
    memory_bytes: int | None
    memory_limit_bytes: int | None
    restart_count: int = 0
    exit_code: int | None = None
    oom_killed: bool = False


@dataclass
class StatusResult(Result):
    project: str
    services: list[ServiceStatus]
    external: list[dict]
    ok: bool = True



def status(settings: Settings) -> StatusResult:
    stack = build_stack(settings)
    client = engine.connect()
    containers = {((c.get("Labels") or {}).get("io.qbctl.service")): c
                  for c in client.api.containers(all=True, filters=engine.project_filter(stack.project))}
    rows: list[ServiceStatus] = []
    mem: dict[str, int | None] = {}

    def measure(name, cid):
        mem[name] = engine.memory_usage(client, cid)

    threads = [threading.Thread(target=measure, args=(n, c["Id"])) for n, c in containers.items()
               if c.get("State") == "running"]
    for t in threads:
        t.start()
    infos = {n: engine.state(client, c["Id"]) for n, c in containers.items()}
    for t in threads:
        t.join()
    for spec in stack.services:
        c = containers.get(spec.name)
        if c is None:
            rows.append(ServiceStatus(spec.name, "absent", None, _port_text(spec), spec.image, None, spec.mem_limit))
            continue
        st = infos[spec.name]
        ports_ = sorted({f"{p.get('IP')}:{p['PublicPort']}" for p in c.get("Ports", []) if p.get("PublicPort")})
        rows.append(ServiceStatus(spec.name, st.status, st.health, ports_, c.get("Image", ""), mem.get(spec.name),
                                  spec.mem_limit, st.restart_count, st.exit_code if st.status != "running" else None,
                                  st.oom_killed))
    ok = all(r.state == "running" and r.health != "unhealthy" for r in rows)
    return StatusResult(stack.project, rows, [{"service": n, "reason": w} for n, w in stack.external], ok)
