"""up: observed state -> plan -> execute -> wait, as data.

Progress goes out as events (qbctl.events); nothing here prints.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.db import connect as pg
from qbctl.engine import facade as engine
from qbctl.engine.lock import Holds, project_lock
from qbctl.engine.runtime import Runtime
from qbctl.errors import CheckFailed, Interrupted, QbctlError, ServerKilled
from qbctl.events import Event, Events, Status, ignore
from qbctl.stack import memo, ports, probes, volumes
from qbctl.stack.plan import Plan, make_plan, observe
from qbctl.stack.spec import ServiceSpec, Stack, build_stack, exposure_warnings, require_project, select, with_volume
from qbctl.stack.status import engine_facts, port_text
from qbctl.stack.up_result import NEXT_COMMANDS, ServiceResult, UpOptions, UpResult, urls  # noqa: F401 - used as up.*

POLL = 0.03  # seconds between readiness probes
STATE_EVERY = 0.25  # seconds between container state checks while waiting
LOG_LINES = 20


def up(settings: Settings, options: UpOptions = UpOptions(), events: Events = ignore, *, rt: Runtime) -> UpResult:
    require_project(settings, "nothing was started")
    from qbctl.stack import warm

    quick = warm.up(settings, options)  # nothing to do: said without the Docker SDK (stack/warm.py)
    if quick is not None:
        result, said = quick
        for event in said:
            events(event)
        return result
    t0 = time.monotonic()
    timeout = options.timeout or settings.values.qbctl_up_timeout
    stack = build_stack(settings, options.profile)
    desired = select(stack, list(options.services) or None, options.no_ui)
    for warning in exposure_warnings(settings):
        events(Event(Status.WARNING, warning))
    run = _Run(settings, options, events, rt, rt.engine, rt.holds, stack, desired, t0, timeout)
    try:
        results, plan, waiter = _up(run)
    except KeyboardInterrupt:
        raise Interrupted(run.left.message()) from None
    timings, stack, eng = run.timings, run.stack, run.eng
    timings["ready"] = round(time.monotonic() - t0, 3)
    ok = all(r.ready for r in results.values())
    result = UpResult(
        stack.project,
        [results[s.name] for s in desired],
        str(plan),
        timings,
        [{"service": n, "reason": why} for n, why in stack.external],
        urls(settings, [s for s in desired if results[s.name].ready]),
        ok=ok,
        engine=engine_facts(eng, stack),
    )
    if waiter.errors:
        result.fail(waiter.errors[0])  # the engine or its ssh connection was lost: that, not "unhealthy"
    elif ok:
        result.next = NEXT_COMMANDS
    else:
        result.fail(_unready_error(result, timeout, {s.name: s.mem_setting for s in desired}))
    return result


@dataclass
class _Left:
    """What an interrupted `up` leaves behind, for its message."""

    started: list[str] = field(default_factory=list)  # created or started by this run
    under_way: str = ""  # the container being created or started when it stopped
    waiting: list[str] = field(default_factory=list)  # started but not ready yet

    def message(self) -> str:
        if not self.started and not self.under_way:
            return "interrupted before any container was created or changed: nothing was left behind"
        parts = []
        if self.started:
            parts.append(f"{', '.join(self.started)} started and left running")
        if self.waiting:
            parts.append(f"not ready yet: {', '.join(self.waiting)}")
        if self.under_way:
            parts.append(f"{self.under_way} was being created or started and may be left half-started")
        return (
            "interrupted: " + "; ".join(parts) + ". `qbctl up` finishes the job, `qbctl down` removes the "
            "containers (the data volumes stay)"
        )


@dataclass
class _Run:
    """One `up` under way: what it was asked, the engine, the stack and services it acts on (PostgreSQL's
    volume chosen once the images are known), its timings and what it has left so far."""

    settings: Settings
    options: UpOptions
    events: Events
    rt: Runtime  # the command's: its reach is how the probes get to the services
    eng: engine.Engine
    holds: Holds  # the project locks this command holds (its Runtime's)
    stack: Stack
    desired: list[ServiceSpec]
    t0: float
    timeout: float
    timings: dict[str, float] = field(default_factory=dict)
    left: _Left = field(default_factory=_Left)


def _up(run: _Run) -> tuple[dict[str, ServiceResult], Plan, _Waiter]:
    """Under the project's lock: the ports, the images, the plan, its changes, then the wait."""
    with project_lock(run.stack.project, run.events, eng=run.eng, holds=run.holds):
        observed = observe(run.eng, run.stack.project)
        # Ports first, before any pull: a busy port is reported in a second, not after a download.
        _check_ports(run.eng, run.stack, make_plan(run.desired, observed, {}), run.rt)
        images = _ensure_images(run.eng, run.desired, run.events)
        run.timings["images"] = round(time.monotonic() - run.t0, 3)
        plan = _plan(run, observed, images)
        on_data = _prepare(run, plan, images)
        cids = {name: o.container_id for name, o in observed.items()}
        results = {s.name: ServiceResult(s.name, s.image, port_text(s)) for s in run.desired}
        for step in plan.steps:
            results[step.service].action = step.action
        _execute(run.eng, run.stack, plan, cids, run.events, run.left)
        run.timings["start"] = round(time.monotonic() - run.t0, 3)
        waiter = _wait(run, observed, cids, results)
    if on_data and results.get("postgres") and results["postgres"].ready:
        _timescaledb_behind(run.settings, run.events, run.rt)
    return results, plan, waiter


def _plan(run: _Run, observed: dict, images: dict[str, dict]) -> Plan:
    """PostgreSQL on its image's volume (run.stack and run.desired updated), then the plan against it."""
    run.stack = _pg_volume(run.eng, run.stack, run.desired, images)
    run.desired = select(run.stack, list(run.options.services) or None, run.options.no_ui)
    return make_plan(run.desired, observed, {img: info["Id"] for img, info in images.items()})


def _prepare(run: _Run, plan: Plan, images: dict[str, dict]) -> bool:
    """The network and volumes the plan's changes need; whether PostgreSQL is (re)created on a volume that
    held data already (its image checked against that data first)."""
    changes = plan.changes()
    if not changes:
        return False
    on_data = False
    run.eng.ensure_network(run.stack)
    changing = [s for s in run.desired if s.name in {c.service for c in changes}]
    made_by = {
        s.name: volumes.created_by(_image_env(images[s.image]), s.image, images[s.image]["Id"])
        for s in changing
        if s.name == "postgres"
    }
    existing = run.eng.ensure_volumes(run.stack, changing, made_by)
    for spec in changing:
        for vol, _ in spec.volumes:
            if spec.name == "postgres" and vol in existing:
                volumes.check(vol, existing[vol], spec.image, _image_env(images[spec.image]))
                on_data = True
    return on_data


def _wait(run: _Run, observed: dict, cids: dict[str, str], results: dict[str, ServiceResult]) -> _Waiter:
    """Every service probed until ready (one already healthy and kept is trusted)."""
    trusted = {n for n, o in observed.items() if o.health == "healthy"}
    waiter = _Waiter(run.eng, run.settings, run.t0, run.t0 + run.timeout, run.events, run.rt)
    run.left.waiting = [s.name for s in run.desired if s.name in run.left.started]
    waiter.wait_all(run.desired, cids, results, trusted, run.left.waiting)
    return waiter


def _timescaledb_behind(settings: Settings, events: Events, rt: Runtime) -> None:
    """PostgreSQL started anew on a volume that held data: a warning when the data's TimescaleDB is older
    than the image's (read from the database; the images set no variable that says it)."""
    try:
        with pg.connect(settings, timeout=2, rt=rt) as conn:
            found = conn.execute(volumes.TSDB_VERSIONS_SQL).fetchone()
    except Exception:  # noqa: BLE001 - a warning only: `qbctl db status` says it too
        return
    warning = volumes.timescaledb_behind(settings.pg.dbname, *(found or (None, None)))
    if warning:
        events(Event(Status.WARNING, warning, "postgres"))


def _pg_volume(eng: engine.Engine, stack: Stack, desired: list[ServiceSpec], images: dict[str, dict]) -> Stack:
    """PostgreSQL on the volume of its image's major: the one `qbctl upgrade` made, if any (volumes.py)."""
    pg = next((s for s in desired if s.name == "postgres"), None)
    if pg is None:
        return stack
    major = _image_env(images[pg.image]).get("PG_MAJOR")
    volume = volumes.data_volume(stack.project, major, eng.volumes(stack.project, "postgres"))
    return with_volume(stack, "postgres", volume) if volume != pg.volumes[0][0] else stack


def _image_env(info: dict | None) -> dict[str, str]:
    env = ((info or {}).get("Config") or {}).get("Env") or []
    return dict(e.split("=", 1) for e in env if "=" in e)


def _execute(eng: engine.Engine, stack: Stack, plan: Plan, cids: dict[str, str], events: Events, left: _Left) -> None:
    """Carry out the plan's changes one by one, in start order (PostgreSQL, on the critical path,
    first). Measured on two cores (bench/): starting the others all at once competes with
    PostgreSQL's initdb for the CPU and makes the whole stack ready later, not sooner."""
    for step in plan.changes():
        spec = stack.get(step.service)
        left.under_way = step.service
        if step.action == "recreate":
            events(Event(Status.WORKING, f"recreating ({step.reason})", step.service))
            eng.remove_container(cids[step.service])
        if step.action in ("create", "recreate"):
            cids[step.service] = eng.create_and_start(stack, spec)
        else:
            eng.start(cids[step.service], spec)
        left.started.append(step.service)
        left.under_way = ""
        events(Event(Status.WORKING, "started", step.service))


def _ensure_images(eng: engine.Engine, desired: list[ServiceSpec], events: Events) -> dict[str, dict]:
    """Every image present (pulled when missing); their inspect data by reference."""
    infos: dict[str, dict] = {}
    for spec in desired:
        if spec.image in infos:
            continue
        found = eng.image_info(spec.image)
        if not found:
            events(Event(Status.PULLING, f"pulling {spec.image}", spec.name))
            found = eng.pull(spec, events)
        infos[spec.image] = found
    return infos


def _check_ports(eng: engine.Engine, stack: Stack, plan: Plan, rt: Runtime) -> None:
    to_bind = []
    for step in plan.changes():
        if step.action in ("recreate", "start"):
            # Its own container holds the port: until it is replaced, or (one that died and is being
            # restarted by its policy) through the engine's proxy between restarts. Should another
            # process have taken it meanwhile, the engine's refusal to start says so (PORT_IN_USE).
            continue
        spec = stack.get(step.service)
        to_bind += [(spec.name, p) for p in spec.ports]
    if to_bind:
        # On the engine's host: this machine's sockets for a local engine, the VM's through ssh for a remote one.
        ports.check_free(
            to_bind,
            who_else=lambda port: _container_on_port(eng, port, stack.project),
            in_use=lambda ip, port: ports.in_use_on_engine(eng, ip, port, rt=rt),
            host=eng.host if eng.remote else None,
        )


def _container_on_port(eng: engine.Engine, port: int, project: str) -> tuple[str | None, bool]:
    """(who publishes the port, whether it is this project's own container)."""
    found = eng.container_on_port(port)
    if not found:
        return None, False
    name, owner = found
    return f"container {name}" + (f" (qbctl project {owner})" if owner else ""), owner == project


class _Waiter:
    """Probe every service in its own thread; stop all at the first that cannot become ready."""

    def __init__(self, eng: engine.Engine, settings: Settings, t0: float, deadline: float, events: Events, rt: Runtime):
        self.eng, self.settings, self.t0, self.deadline, self.events = eng, settings, t0, deadline, events
        self.rt = rt
        self.failed = threading.Event()
        self.errors: list[QbctlError] = []  # a lost engine or tunnel, from any thread
        self.probe_timeout = eng.allow(2.0)

    def wait_all(
        self,
        desired: list[ServiceSpec],
        cids: dict[str, str],
        results: dict[str, ServiceResult],
        trusted: set[str],
        waiting: list[str] | None = None,
    ) -> None:
        """Wait for every service; `waiting` (when given) keeps the names of those not ready yet."""
        self.waiting = waiting if waiting is not None else []
        threads = []
        for spec in desired:
            res = results[spec.name]
            if res.action == "keep" and spec.name in trusted:
                res.ready, res.seconds, res.detail = True, 0.0, "already ready"
                continue
            t = threading.Thread(target=self.wait_one, args=(spec, cids[spec.name], res), daemon=True)
            t.start()
            threads.append(t)
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)  # short joins keep Ctrl-C responsive
        finally:
            self.failed.set()  # on Ctrl-C too: the probing threads stop

    def wait_one(self, spec: ServiceSpec, cid: str, res: ServiceResult) -> None:
        """One service's wait; whatever goes wrong ends it as this service's failure, never a traceback."""
        try:
            self._wait_one(spec, cid, res)
        except QbctlError as exc:
            self.errors.append(exc)
            self._fail(spec, cid, res, exc.message)
        except Exception as exc:  # noqa: BLE001 - reported as the service's failure
            self._fail(spec, cid, res, f"{type(exc).__name__}: {str(exc)[:200]}")

    def _wait_one(self, spec: ServiceSpec, cid: str, res: ServiceResult) -> None:
        next_state = 0.0
        while not self.failed.is_set():
            now = time.monotonic()
            if now >= next_state:
                st = self.eng.state(cid)
                if st.status in ("exited", "dead") or st.restart_count > 0 or st.oom_killed:
                    res.exit_code, res.oom_killed = st.exit_code, st.oom_killed or st.exit_code == 137
                    why = (
                        "was killed: out of memory (exit 137)" if res.oom_killed else f"exited with code {st.exit_code}"
                    )
                    self._fail(
                        spec, cid, res, f"container {why}" + (" and is restarting" if st.status == "restarting" else "")
                    )
                    return
                next_state = now + STATE_EVERY
            last = probes.probe(
                spec, self.settings, timeout=max(0.2, min(self.probe_timeout, self.deadline - now)), rt=self.rt
            )
            if last.ok:
                res.ready, res.seconds, res.detail = True, round(time.monotonic() - self.t0, 3), last.detail
                if spec.name in self.waiting:
                    self.waiting.remove(spec.name)
                self.events(Event(Status.DONE, memo.ready_text(res.seconds), spec.name))
                return
            if last.fatal:
                self._fail(spec, cid, res, last.detail)
                return
            if time.monotonic() >= self.deadline:
                self._fail(spec, cid, res, f"not ready after the timeout: {last.detail}", quiet=True)
                return
            time.sleep(POLL)

    def _fail(self, spec: ServiceSpec, cid: str, res: ServiceResult, detail: str, quiet: bool = False) -> None:
        res.detail = detail
        res.logs = self.eng.tail_logs(cid, LOG_LINES)
        self.failed.set()
        if not quiet:
            self.events(Event(Status.FAILED, detail, spec.name))


def _unready_error(result: UpResult, timeout: float, limits: dict[str, str]) -> QbctlError:
    bad = [s for s in result.services if not s.ready and s.detail]
    bad = bad or [s for s in result.services if not s.ready]
    first = bad[0]
    if first.name == "postgres":
        known = volumes.classify(first.logs, f"{result.project}_pgdata")
        if known:
            return known
    if first.oom_killed:  # a killed server is unavailable (exit 3), as SERVER_KILLED is from migrate and seed
        return ServerKilled(
            f"{first.name}: {first.detail}",
            code="OOM_KILLED",
            hint=f"raise its memory limit ({limits[first.name]}) or lower its "
            "memory settings; `qbctl budget` shows the arithmetic",
        )
    if first.name == "postgres" and pg.bad_url(first.detail):
        return pg.url_error(first.detail)  # the server runs; the URL is what is wrong
    if "password authentication failed" in first.detail:
        return pg.auth_error(f"{first.name}: {first.detail}")
    if "timeout" in first.detail:
        return CheckFailed(
            f"{first.name} was not ready within {timeout:.0f}s: {first.detail}",
            code="TIMEOUT",
            hint="`qbctl logs " + first.name + "` shows why; raise --timeout if it is only slow",
        )
    return CheckFailed(
        f"{first.name}: {first.detail}",
        code="UNHEALTHY",
        hint=f"its last log lines are shown above; `qbctl logs {first.name}` has the rest",
    )
