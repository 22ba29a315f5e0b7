"""`up` on a stack that already runs as asked: the answer in a few raw engine calls, or None.

A warm `up` (every container there, unchanged, running and healthy) does nothing, so it should cost
next to nothing, as `docker compose up -d` does on a running stack. The ordinary path imports the
Docker SDK (~100 ms), takes the project lock, inspects every image and probes what it cannot trust.
This one, on a local Docker engine only, asks the engine's socket directly (qbctl.stack.rawapi): the
project's containers in one list call, the images' IDs, PostgreSQL's data volumes, and a UI's restart
count; it plans with the same planner (plan.make_plan) on the same specs. When every step is `keep`,
every service with a health check is `healthy` and every UI answers HTTP 200, it returns the result
the ordinary path would have returned (its events held until then, to be replayed by the caller).
Anything else, or anything it cannot tell (an ssh or tcp engine, Podman, an engine that does not
answer, another qbctl holding the project's lock), is None: the ordinary path runs and decides.
It never creates, starts or changes anything. It runs before the command's Runtime exists, so it resolves
the engine with a `Reach` of its own (transport/reach.py), closed when it returns; it imports no Docker SDK.
"""

from __future__ import annotations

import fcntl
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from qbctl.config.settings import Settings
from qbctl.engine import lock
from qbctl.engine.labels import LABEL_CONFIG, LABEL_SERVICE, project_filter
from qbctl.errors import QbctlError
from qbctl.events import Event, Status
from qbctl.stack import memo, rawapi, volumes
from qbctl.stack.plan import Observed, make_plan
from qbctl.stack.spec import build_stack, exposure_warnings, select, with_volume
from qbctl.transport.reach import Reach

if TYPE_CHECKING:
    from qbctl.stack.up_result import UpResult


def up(settings: Settings, options, keep: dict | None = None) -> tuple[UpResult, list[Event]] | None:
    """(the UpResult, the events to replay) of an `up` with nothing to do; None when there may be
    something to do or this cannot tell. `options` is up_result.UpOptions. `keep`, when given, is filled
    with the questions asked of the engine and its answers, for stack/memo.py to keep the answer by."""
    with Reach() as reach:
        try:
            return _up(settings, options, {} if keep is None else keep, reach)
        except (rawapi.RawUnavailable, QbctlError, OSError, KeyError, TypeError, ValueError, AttributeError):
            return None  # the ordinary path runs and says in words whatever is wrong


def _socket_path(reach: Reach) -> str | None:
    """The local engine's socket, when the engine is this machine's Docker over a unix socket."""
    tgt = reach.current()
    if tgt.kind != "local" or not tgt.url.startswith("unix://"):
        return None
    return tgt.url[len("unix://") :]


def _up(settings: Settings, options, keep: dict, reach: Reach):
    if not settings.is_project:
        return None  # NOT_A_PROJECT comes from the ordinary path
    path = _socket_path(reach)
    if path is None:
        return None
    t0 = time.monotonic()
    stack = build_stack(settings, options.profile)
    desired = select(stack, list(options.services) or None, options.no_ui)
    events = [Event(Status.WARNING, w) for w in exposure_warnings(settings)]
    with open(lock.local_path(stack.project), "a+") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another qbctl is changing the project: the ordinary path waits for it
        try:
            with rawapi.RawEngine(path) as api:
                found = _look(api, settings, options, stack, desired, t0, events, keep, reach)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    if found is None:
        return None
    keep.update(socket=path, source=reach.current().source, lock=str(lock.local_path(stack.project)))
    return _result(settings, found, t0, reach.current().describe()), events


def _look(
    api: rawapi.RawEngine,
    settings: Settings,
    options,
    stack,
    desired,
    t0: float,
    events: list[Event],
    keep: dict,
    reach: Reach,
):
    listing = "/containers/json?all=1&filters=" + rawapi.query(project_filter(stack.project))
    listed = api.get_json(listing)
    if not api.server.startswith("Docker/"):
        return None  # Podman (Libpod/...) or another engine: its details differ, the SDK's way knows them
    observed, ids = {}, {}
    for c in listed:
        labels = c.get("Labels") or {}
        service = labels.get(LABEL_SERVICE)
        if service:
            health = memo.health_of(c.get("Status", ""))
            observed[service] = Observed(
                service, c["Id"], c.get("State", ""), labels.get(LABEL_CONFIG, ""), c.get("ImageID", ""), health
            )
            ids[service] = c["Id"]
    if any(s.name not in observed or observed[s.name].state != "running" for s in desired):
        return None  # before any other call: a stack that is down costs one list call here
    # Services without a health check (the UIs) are probed as the ordinary path probes them: HTTP 200.
    unprobed = [s for s in desired if observed[s.name].health != "healthy"]
    if any(s.healthcheck or observed[s.name].health is not None or s.probe != "http" for s in unprobed):
        return None  # starting, unhealthy: the ordinary path probes and waits
    # Everything else in one batch: the images (their IDs; PostgreSQL's major), PostgreSQL's volumes, the
    # restart count of each service to probe (a UI that restarted fails the ordinary path's wait).
    image_refs = list(dict.fromkeys(s.image for s in desired))
    pg = next((s for s in desired if s.name == "postgres"), None)
    paths = [f"/images/{quote(ref, safe='/:')}/json" for ref in image_refs]
    if pg is not None:
        paths.append("/volumes?filters=" + rawapi.query(project_filter(stack.project, "postgres")))
    paths += [f"/containers/{ids[s.name]}/json" for s in unprobed]
    answers = api.get_many(paths)
    endpoints = _endpoints(unprobed, reach)
    probing = rawapi.http_statuses_start(endpoints)  # the UIs work on their answers while the engine's are read
    try:
        images = {}
        for ref, (status, body) in zip(image_refs, answers, strict=False):
            if status == 404:
                return None  # to be pulled
            images[ref] = rawapi.decode(status, body)
        if pg is not None:  # PostgreSQL's volume, chosen as up._pg_volume chooses it
            env = dict(e.split("=", 1) for e in (images[pg.image].get("Config") or {}).get("Env") or [] if "=" in e)
            found = rawapi.decode(*answers[len(image_refs)])
            existing = {v["Name"]: v.get("Labels") or {} for v in found.get("Volumes") or []}
            volume = volumes.data_volume(stack.project, env.get("PG_MAJOR"), existing)
            if volume != pg.volumes[0][0]:
                stack = with_volume(stack, "postgres", volume)
                desired = select(stack, list(options.services) or None, options.no_ui)
        plan = make_plan(desired, observed, {ref: info["Id"] for ref, info in images.items()})
        if plan.changes():
            return None
        for answer in answers[len(paths) - len(unprobed) :]:
            state = rawapi.decode(*answer)
            st = state.get("State") or {}
            if st.get("Status") != "running" or state.get("RestartCount", 0) or st.get("OOMKilled"):
                return None  # the ordinary path says what happened to it
    finally:
        statuses = rawapi.http_statuses_end(probing)
    if any(status != 200 for status in statuses):
        return None  # not answering (yet): the ordinary path waits for it
    seconds = round(time.monotonic() - t0, 3)
    services = []
    for spec in desired:
        ports = [f"{p.host_ip}:{p.host}" for p in spec.ports]
        if spec in unprobed:
            services.append((spec, ports, seconds, "HTTP 200"))
            events.append(Event(Status.DONE, memo.ready_text(seconds), spec.name))
        else:
            services.append((spec, ports, 0.0, "already ready"))
    keep.update(
        list=listing,
        paths=paths,
        engine=memo.signature(listed, paths, answers, rawapi.decode),
        probes=endpoints,
        probed=[s.name for s in unprobed],
    )
    return stack, plan, services


def _endpoints(specs, reach: Reach) -> list[tuple[str, int]]:
    endpoints = []
    for spec in specs:
        p = spec.ports[0]
        endpoints.append(reach.endpoint("0.0.0.0" if p.host_ip == "::" else p.host_ip, p.host, p.host_ip))
    return endpoints


def _result(settings: Settings, found, t0: float, where: str):
    from qbctl.stack import up_result

    stack, plan, services = found
    results = []
    for spec, ports, seconds, detail in services:
        res = up_result.ServiceResult(
            spec.name, spec.image, ports, action="keep", ready=True, seconds=seconds, detail=detail
        )
        results.append(res)
    elapsed = round(time.monotonic() - t0, 3)
    timings = {"images": elapsed, "start": elapsed, "ready": elapsed}
    result = up_result.UpResult(
        stack.project,
        results,
        str(plan),
        timings,
        [{"service": n, "reason": why} for n, why in stack.external],
        up_result.urls(settings, [spec for spec, *_ in services]),
        ok=True,
        engine={
            "where": where,
            "host": "this machine",
            "remote": False,
            "product": "docker",
            "rtt_ms": 0.0,
            "profile": stack.profile,
        },
    )
    result.next = list(up_result.NEXT_COMMANDS)
    return result
