"""status: each service's container, state, health, ports and memory, as data; and where the stack runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.engine import facade as engine
from qbctl.engine.runtime import Runtime
from qbctl.errors import QbctlError
from qbctl.result import Result
from qbctl.stack.spec import ServiceSpec, Stack, build_stack


def engine_facts(eng: engine.Engine, stack: Stack | None = None) -> dict:
    """Where a stack runs, for people and for --json: the engine, its host, the measured round trip."""
    facts = {
        "where": eng.where,
        "host": eng.host,
        "remote": eng.remote,
        "product": eng.product,
        "rtt_ms": round(eng.rtt * 1000, 1),
    }
    if stack is not None:
        facts["profile"] = stack.profile
    return facts


def port_text(spec: ServiceSpec) -> list[str]:
    return [f"{p.host_ip}:{p.host}" for p in spec.ports]


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
    project_source: str = ""  # how the project was found (settings.project_source)
    ok: bool = True
    error: QbctlError | None = None
    engine: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _limit_note(spec: ServiceSpec, limit: int, c: engine.Container) -> str:
    """A running container whose memory limit is not the settings' (the status table shows its own)."""
    from qbctl.config.sizes import fmt_mb
    from qbctl.engine.labels import LABEL_CONFIG

    how = (
        "applied by the next `qbctl up`"
        if c.labels.get(LABEL_CONFIG) != spec.config_hash()
        else "not applied by `qbctl up`, which keeps the container (its settings did not change: the limit was changed "
        "on the container)"
    )
    return (
        f"{spec.name} runs with a {fmt_mb(limit)} memory limit; {spec.mem_setting} says {fmt_mb(spec.mem_limit)}, {how}"
    )


def status(settings: Settings, *, rt: Runtime) -> StatusResult:
    stack = build_stack(settings)
    eng = rt.engine
    containers = {c.service: c for c in eng.containers(stack.project)}
    mem: dict[str, int | None] = {}
    limits: dict[str, int] = {}  # a running container's own limit: the settings' applies at its next creation
    infos: dict[str, engine.ContainerState] = {}

    errors: list[QbctlError] = []
    with_cache: list[str] = []

    def measure(name: str, cid: str, running: bool) -> None:
        try:
            infos[name] = eng.state(cid)
            if running:
                m = eng.memory(cid)
                mem[name] = m.without_cache if m else None
                if m and m.limit:
                    limits[name] = m.limit
                if m and not m.cache_known:
                    with_cache.append(name)
        except QbctlError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=measure, args=(n, c.id, c.state == "running")) for n, c in containers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    rows: list[ServiceStatus] = []
    for spec in stack.services:
        c = containers.get(spec.name)
        if c is None:
            rows.append(ServiceStatus(spec.name, "absent", None, port_text(spec), spec.image, None, spec.mem_limit))
            continue
        st = infos[spec.name]
        limit = limits.get(spec.name, spec.mem_limit)
        rows.append(
            ServiceStatus(
                spec.name,
                st.status,
                st.health,
                list(c.ports),
                c.image,
                mem.get(spec.name),
                limit,
                st.restart_count,
                st.exit_code if st.status != "running" else None,
                st.oom_killed,
            )
        )
    ok = all(r.state == "running" and r.health != "unhealthy" for r in rows)
    notes = (
        [
            f"memory of {', '.join(sorted(with_cache))} includes page cache: the engine ({eng.product}) gives no "
            "cache figure and the container's cgroup could not be read"
        ]
        if with_cache
        else []
    )
    notes += [
        _limit_note(s, limits[s.name], containers[s.name])
        for s in stack.services
        if s.name in limits and s.mem_limit and abs(limits[s.name] - s.mem_limit) > 4096
    ]  # (cgroups: pages)
    return StatusResult(
        stack.project,
        rows,
        [{"service": n, "reason": w} for n, w in stack.external],
        settings.project_source,
        ok,
        engine=engine_facts(eng, stack),
        notes=notes,
    )
