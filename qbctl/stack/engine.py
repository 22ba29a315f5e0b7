"""The Docker engine, through the Docker SDK: connect, observe, create and remove by label.

Only objects labelled io.qbctl.project=<project> are ever changed or removed. A
name that qbctl would use but that belongs to an unlabelled object is an error,
never a takeover.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from qbctl.errors import QbctlError, Unavailable
from qbctl.stack.plan import Observed
from qbctl.stack.spec import LABEL_CONFIG, LABEL_PROJECT, LABEL_SERVICE, ServiceSpec, Stack

CONNECT_TIMEOUT = 2  # seconds: an unreachable engine is reported well within 2 s
API_TIMEOUT = 120


class NotOwned(QbctlError):
    exit_code = 1
    code = "NAME_CONFLICT"


def _docker_target() -> tuple[str | None, object, str]:
    """(base_url, tls, description) honouring DOCKER_HOST, then DOCKER_CONTEXT / the current context."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return None, False, f"DOCKER_HOST={host}"
    from docker.context import ContextAPI
    from docker.context.config import get_current_context_name

    name = os.environ.get("DOCKER_CONTEXT") or get_current_context_name()
    if name and name != "default":
        ctx = ContextAPI.get_context(name)
        if ctx is None:
            raise Unavailable(f"Docker context {name!r} does not exist", code="DOCKER_UNAVAILABLE",
                              hint="`docker context ls` lists them; unset DOCKER_CONTEXT or pick another")
        return ctx.Host, ctx.TLSConfig or False, f"context {name} ({ctx.Host})"
    return None, False, "the local engine (unix:///var/run/docker.sock)"


def connect():
    """A DockerClient, or DOCKER_UNAVAILABLE (exit 3) within CONNECT_TIMEOUT seconds."""
    import docker
    from docker.errors import DockerException

    base_url, tls, where = _docker_target()
    try:
        if base_url:
            client = docker.DockerClient(base_url=base_url, tls=tls, version="auto", timeout=CONNECT_TIMEOUT)
        else:
            client = docker.from_env(version="auto", timeout=CONNECT_TIMEOUT)
    except (DockerException, OSError) as exc:
        raise Unavailable(f"cannot reach the Docker engine at {where}: {_reason(exc)}", code="DOCKER_UNAVAILABLE",
                          hint="is the Docker daemon running? Start it, or point DOCKER_HOST / "
                               "DOCKER_CONTEXT at a running engine") from None
    client.api.timeout = API_TIMEOUT
    return client


def _reason(exc: Exception) -> str:
    text = str(exc)
    for needle, reason in (("FileNotFoundError", "no socket there"), ("Connection refused", "connection refused"),
                           ("Permission denied", "permission denied (are you in the docker group?)"),
                           ("timed out", "no answer within 2s"), ("Name or service not known", "unknown host")):
        if needle in text:
            return reason
    return text[:200]


def project_filter(project: str, service: str | None = None) -> dict:
    labels = [f"{LABEL_PROJECT}={project}"]
    if service:
        labels.append(f"{LABEL_SERVICE}={service}")
    return {"label": labels}


def observe(client, project: str) -> dict[str, Observed]:
    """This project's containers by service, from one list call (no inspect per container)."""
    out = {}
    for c in client.api.containers(all=True, filters=project_filter(project)):
        labels = c.get("Labels") or {}
        service = labels.get(LABEL_SERVICE)
        if not service:
            continue
        status = c.get("Status", "")
        health = None
        for h in ("healthy", "unhealthy", "health: starting"):
            if f"({h})" in status:
                health = h.replace("health: ", "")
        out[service] = Observed(service, c["Id"], c.get("State", ""), labels.get(LABEL_CONFIG, ""),
                                c.get("ImageID", ""), health)
    return out


def image_info(client, image: str) -> dict | None:
    from docker.errors import ImageNotFound

    try:
        return client.api.inspect_image(image)
    except ImageNotFound:
        return None


def image_env(info: dict | None) -> dict[str, str]:
    env = ((info or {}).get("Config") or {}).get("Env") or []
    return dict(e.split("=", 1) for e in env if "=" in e)


def pull(client, spec: ServiceSpec, on_progress=None) -> dict:
    """Pull spec.image and return its inspect data; on failure name the image and the setting."""
    from docker.errors import APIError, DockerException

    repo, _, tag = spec.image.rpartition(":") if ":" in spec.image.rsplit("/", 1)[-1] else (spec.image, "", "latest")
    try:
        for event in client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise APIError(event["error"])
            if on_progress:
                on_progress(spec.name, event)
    except (DockerException, OSError) as exc:
        reason = getattr(exc, "explanation", None) or str(exc)
        raise Unavailable(f"cannot pull image {spec.image} for {spec.name}: {str(reason)[:300]}",
                          code="IMAGE_UNAVAILABLE",
                          hint=f"set {spec.image_setting} to an image this engine has (docker images) "
                               "or to a registry mirror it can reach") from None
    found = image_info(client, spec.image)
    if not found:
        raise Unavailable(f"pulled {spec.image} but the engine does not list it", code="IMAGE_UNAVAILABLE")
    return found


def _check_owned(obj_labels: dict | None, project: str, kind: str, name: str) -> None:
    if (obj_labels or {}).get(LABEL_PROJECT) != project:
        raise NotOwned(f"a {kind} named {name} exists and was not created by qbctl for project {project}",
                       hint="qbctl never touches it: remove or rename it yourself, or use --project OTHER")


def ensure_network(client, stack: Stack) -> None:
    from docker.errors import NotFound

    try:
        net = client.api.inspect_network(stack.network)
        _check_owned(net.get("Labels"), stack.project, "network", stack.network)
    except NotFound:
        client.api.create_network(stack.network, driver="bridge", labels={LABEL_PROJECT: stack.project})


def ensure_volumes(client, stack: Stack, specs: list[ServiceSpec], created_by: dict[str, dict]) -> dict[str, dict]:
    """Create missing volumes, labelled with what made them; return the labels of those that existed.

    created_by[service] holds labels recorded on a new volume (e.g. the image's PostgreSQL major),
    so that a later image can be checked against the data before it starts on it.
    """
    from docker.errors import NotFound

    existing = {}
    for spec in specs:
        for name, _ in spec.volumes:
            try:
                vol = client.api.inspect_volume(name)
                _check_owned(vol.get("Labels"), stack.project, "volume", name)
                existing[name] = vol.get("Labels") or {}
            except NotFound:
                labels = {LABEL_PROJECT: stack.project, LABEL_SERVICE: spec.name, **created_by.get(spec.name, {})}
                client.api.create_volume(name, labels=labels)
    return existing


def create_and_start(client, stack: Stack, spec: ServiceSpec) -> str:
    """Create the service's container (name, labels, limits, ports, volumes) and start it."""
    from docker.errors import APIError, NotFound

    api = client.api
    name = stack.container_name(spec.name)
    try:
        existing = api.inspect_container(name)
        _check_owned(existing["Config"].get("Labels"), stack.project, "container", name)
        api.remove_container(name, force=True)
    except NotFound:
        pass
    host_config = api.create_host_config(
        port_bindings={p.container: (p.host_ip, p.host) for p in spec.ports},
        binds={vol: {"bind": path, "mode": "rw"} for vol, path in spec.volumes},
        mem_limit=spec.mem_limit, memswap_limit=spec.mem_limit,
        cpu_shares=spec.cpu_shares,
        restart_policy={"Name": "unless-stopped"},
        network_mode=stack.network,
    )
    healthcheck = None
    if spec.healthcheck:
        healthcheck = {"test": list(spec.healthcheck), "interval": 5 * 10**9, "timeout": 3 * 10**9, "retries": 3}
    labels = dict(spec.labels) | {LABEL_SERVICE: spec.name, LABEL_CONFIG: spec.config_hash()}
    networking = api.create_networking_config({stack.network: api.create_endpoint_config(aliases=[spec.name])})
    try:
        cid = api.create_container(
            spec.image, command=list(spec.command) or None, name=name, hostname=spec.name,
            environment=dict(spec.environment), labels=labels, host_config=host_config,
            ports=[p.container for p in spec.ports], stop_signal=spec.stop_signal,
            healthcheck=healthcheck, networking_config=networking,
        )["Id"]
        api.start(cid)
    except APIError as exc:
        raise _start_error(spec, exc) from None
    return cid


def _start_error(spec: ServiceSpec, exc) -> QbctlError:
    text = str(getattr(exc, "explanation", None) or exc)
    if "address already in use" in text or "port is already allocated" in text:
        port = spec.ports[0]
        return Unavailable(f"port {port.host} on {port.host_ip} is in use (the engine could not publish it "
                           f"for {spec.name})", code="PORT_IN_USE",
                           hint=f"stop what holds it, or move {spec.name} with {port.setting}")
    return Unavailable(f"the engine could not start {spec.name}: {text[:300]}", code="START_FAILED")


def start(client, container_id: str) -> None:
    client.api.start(container_id)


def remove_container(client, container_id: str, timeout: int = 10) -> None:
    from docker.errors import NotFound

    try:
        client.api.stop(container_id, timeout=timeout)
        client.api.remove_container(container_id, force=True)
    except NotFound:
        pass


@dataclass(frozen=True)
class ContainerState:
    status: str
    exit_code: int
    oom_killed: bool
    restart_count: int
    health: str | None


def state(client, container_id: str) -> ContainerState:
    info = client.api.inspect_container(container_id)
    st = info["State"]
    oom = bool(st.get("OOMKilled"))
    restarts = info.get("RestartCount", 0)
    if not oom and (restarts or st.get("Status") != "running"):
        # A restart clears OOMKilled; the engine's event log still has the kill.
        oom = had_oom(client, container_id, info.get("Created", ""))
    return ContainerState(st.get("Status", ""), st.get("ExitCode", 0), oom, restarts,
                          (st.get("Health") or {}).get("Status"))


def had_oom(client, container_id: str, created: str) -> bool:
    import time
    from datetime import datetime, timezone

    try:
        since = int(datetime.fromisoformat(created[:19]).replace(tzinfo=timezone.utc).timestamp()) if created \
            else int(time.time()) - 3600
        events = client.api.events(since=since - 1, until=int(time.time()) + 1, decode=True,
                                   filters={"container": container_id, "event": "oom"})
        return any(True for _ in events)
    except Exception:  # noqa: BLE001 - evidence only
        return False


def tail_logs(client, container_id: str, lines: int = 20) -> list[str]:
    try:
        raw = client.api.logs(container_id, stdout=True, stderr=True, tail=lines)
    except Exception:  # logs are evidence, never a reason to fail the report itself
        return []
    return raw.decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:]


def memory_usage(client, container_id: str) -> int | None:
    """Memory in use without the page cache, as `docker stats` computes it."""
    try:
        s = client.api.stats(container_id, stream=False, one_shot=True)
    except Exception:
        return None
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    stats = mem.get("stats") or {}
    cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return max(usage - cache, 0)
