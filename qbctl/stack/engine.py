"""The Docker engine: the only module that talks to the Docker SDK.

`connect()` gives an `Engine`; everything qbctl asks of Docker is a method here and returns
plain data (dicts, dataclasses), never SDK objects. Only objects labelled
io.qbctl.project=<project> are ever changed or removed. A name that qbctl would use but that
belongs to an unlabelled object is an error (NAME_CONFLICT), never a takeover.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC

from qbctl.errors import NotOwned, QbctlError, Unavailable
from qbctl.events import Event, Events, Status, ignore
from qbctl.stack.labels import LABEL_CONFIG, LABEL_PROJECT, LABEL_SERVICE, project_filter
from qbctl.stack.plan import Observed
from qbctl.stack.spec import ServiceSpec, Stack

CONNECT_TIMEOUT = 2  # seconds: an unreachable engine is reported well within 2 s
API_TIMEOUT = 120


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str | None
    state: str  # running | exited | created | restarting | paused | dead
    status: str  # the engine's human text: "Up 3 minutes (healthy)"
    image: str
    image_id: str
    labels: dict
    ports: tuple[str, ...]  # "127.0.0.1:5432"

    @property
    def health(self) -> str | None:
        for h in ("healthy", "unhealthy", "health: starting"):
            if f"({h})" in self.status:
                return h.replace("health: ", "")
        return None


@dataclass(frozen=True)
class ContainerState:
    status: str
    exit_code: int
    oom_killed: bool
    restart_count: int
    health: str | None
    started_at: str = ""


@dataclass(frozen=True)
class Memory:
    """A container's memory from the engine's stats API (cgroup v1 and v2, local or remote)."""

    usage: int  # what the cgroup is charged for, page cache included
    cache: int  # reclaimable page cache: file pages, active and inactive (shared memory is not among them)
    limit: int
    max_usage: int | None  # the cgroup's own peak (cgroup v1 only), page cache included

    @property
    def without_cache(self) -> int:
        """The memory the kernel cannot simply drop: anonymous and shared memory, kernel memory.
        (`docker stats` subtracts only inactive file pages; active ones are reclaimed just the same
        before anything is killed.)"""
        return max(self.usage - self.cache, 0)


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


def connect() -> Engine:
    """The engine, or DOCKER_UNAVAILABLE (exit 3) within CONNECT_TIMEOUT seconds."""
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
    return Engine(client.api, where)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for needle, reason in (("FileNotFoundError", "no socket there"), ("Connection refused", "connection refused"),
                           ("Permission denied", "permission denied (are you in the docker group?)"),
                           ("timed out", "no answer within 2s"), ("Name or service not known", "unknown host")):
        if needle in text:
            return reason
    return text[:200]


def _check_owned(obj_labels: dict | None, project: str, kind: str, name: str) -> None:
    if (obj_labels or {}).get(LABEL_PROJECT) != project:
        raise NotOwned(f"a {kind} named {name} exists and was not created by qbctl for project {project}",
                       hint="qbctl never touches it: remove or rename it yourself, or use --project OTHER")


class Engine:
    def __init__(self, api, where: str) -> None:
        self._api = api
        self.where = where

    # --- looking ---------------------------------------------------------------------------------
    def containers(self, project: str, service: str | None = None, running_only: bool = False) -> list[Container]:
        """This project's containers (one list call, no inspect per container)."""
        out = []
        for c in self._api.containers(all=not running_only, filters=project_filter(project, service)):
            labels = c.get("Labels") or {}
            ports = tuple(sorted({f"{p.get('IP')}:{p['PublicPort']}" for p in c.get("Ports", [])
                                  if p.get("PublicPort")}))
            out.append(Container(c["Id"], c["Names"][0].lstrip("/"), labels.get(LABEL_SERVICE), c.get("State", ""),
                                 c.get("Status", ""), c.get("Image", ""), c.get("ImageID", ""), labels, ports))
        return out

    def observe(self, project: str) -> dict[str, Observed]:
        """This project's containers by service, as the planner sees them."""
        return {c.service: Observed(c.service, c.id, c.state, c.labels.get(LABEL_CONFIG, ""), c.image_id, c.health)
                for c in self.containers(project) if c.service}

    def container_on_port(self, port: int) -> tuple[str, str | None] | None:
        """(name, qbctl project or None) of a running container that publishes `port`."""
        for c in self._api.containers(filters={"publish": str(port)}):
            return c["Names"][0].lstrip("/"), (c.get("Labels") or {}).get(LABEL_PROJECT)
        return None

    def state(self, container_id: str) -> ContainerState:
        info = self._api.inspect_container(container_id)
        st = info["State"]
        oom = bool(st.get("OOMKilled"))
        restarts = info.get("RestartCount", 0)
        if not oom and (restarts or st.get("Status") != "running"):
            # A restart clears OOMKilled; the engine's event log may still have the kill.
            oom = self._had_oom(container_id, info.get("Created", ""))
        return ContainerState(st.get("Status", ""), st.get("ExitCode", 0), oom, restarts,
                              (st.get("Health") or {}).get("Status"), st.get("StartedAt", ""))

    def _had_oom(self, container_id: str, created: str) -> bool:
        from datetime import datetime

        try:
            since = int(datetime.fromisoformat(created[:19]).replace(tzinfo=UTC).timestamp()) if created \
                else int(time.time()) - 3600
            events = self._api.events(since=since - 1, until=int(time.time()) + 1, decode=True,
                                      filters={"container": container_id, "event": "oom"})
            return any(True for _ in events)
        except Exception:  # noqa: BLE001 - evidence only
            return False

    def memory(self, container_id: str) -> Memory | None:
        """Memory figures from one stats sample; None when the engine gives none.

        A local engine's container cgroup is read directly (a few ms): the stats API waits for its
        collector's next one-second tick even with one_shot (Docker 20.10), which made `status` take 1.2 s.
        The figures are the same counters the stats API reports."""
        local = cgroup_memory(container_id)
        if local is not None:
            return local
        try:
            s = self._api.stats(container_id, stream=False, one_shot=True)
        except Exception:  # noqa: BLE001 - a container that just went away has no figures
            return None
        return memory_from_stats(s)

    @property
    def on_this_host(self) -> bool:
        """Whether the engine's containers run on this machine (reached through a local socket)."""
        return self._api.base_url == "http+docker://localhost"  # docker-py's name for a unix socket

    def cgroup_memory_file(self, container_id: str, names: tuple[str, ...]) -> str | None:
        """The first of the container's cgroup memory files (memory.events, memory.oom_control) that can be
        read: straight from /sys/fs/cgroup when the engine runs here (cgroup v1 or v2, cgroupfs or systemd
        driver; a tenth of a millisecond), else from inside the container (an exec, ~100 ms)."""
        if self.on_this_host:
            for name in names:
                for folder in (f"memory/docker/{container_id}", f"memory/system.slice/docker-{container_id}.scope",
                               f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"):
                    try:
                        with open(f"/sys/fs/cgroup/{folder}/{name}") as f:
                            return f.read()
                    except OSError:
                        continue
        paths = " ".join(f"/sys/fs/cgroup/{n} /sys/fs/cgroup/memory/{n}" for n in names)
        return self.exec_text(container_id, ["sh", "-c", f"for f in {paths}; do [ -r $f ] && exec cat $f; done"])

    def exec_text(self, container_id: str, cmd: list[str], timeout: float = 10) -> str | None:
        """stdout of a command run inside the container, or None when it cannot run."""
        try:
            ex = self._api.exec_create(container_id, cmd, stdout=True, stderr=False)
            out = self._api.exec_start(ex["Id"])
            return out.decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - best effort: evidence only
            return None

    def tail_logs(self, container_id: str, lines: int = 20, since: int | None = None) -> list[str]:
        try:
            kw = {"since": since} if since else {}
            raw = self._api.logs(container_id, stdout=True, stderr=True, tail=lines, **kw)
        except Exception:  # noqa: BLE001 - logs are evidence, never a reason to fail the report itself
            return []
        return raw.decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:]

    def log_text(self, container_id: str) -> str:
        """The container's whole log (stdout and stderr) as text."""
        try:
            return self._api.logs(container_id, stdout=True, stderr=True).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001
            return ""

    def log_stream(self, container_id: str, follow: bool, tail: int | None):
        """The log as chunks of bytes, as they come."""
        return self._api.logs(container_id, stream=True, follow=follow, tail=tail if tail is not None else "all")

    # --- images ----------------------------------------------------------------------------------
    def image_info(self, image: str) -> dict | None:
        from docker.errors import ImageNotFound

        try:
            return self._api.inspect_image(image)
        except ImageNotFound:
            return None

    def pull(self, spec: ServiceSpec, events: Events = ignore) -> dict:
        """Pull spec.image (progress as `pulling` events with bytes) and return its inspect data; on
        failure name the image and the setting."""
        from docker.errors import APIError, DockerException

        repo, _, tag = spec.image.rpartition(":") if ":" in spec.image.rsplit("/", 1)[-1] \
            else (spec.image, "", "latest")
        try:
            for event in self._api.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise APIError(event["error"])
                detail = event.get("progressDetail") or {}
                text = f"{event.get('status', '')} {event.get('progress', '')}".strip()
                events(Event(Status.PULLING, text, spec.name, detail.get("current"), detail.get("total")))
        except (DockerException, OSError) as exc:
            reason = getattr(exc, "explanation", None) or str(exc)
            raise Unavailable(f"cannot pull image {spec.image} for {spec.name}: {str(reason)[:300]}",
                              code="IMAGE_UNAVAILABLE",
                              hint=f"set {spec.image_setting} to an image this engine has (docker images) "
                                   "or to a registry mirror it can reach") from None
        found = self.image_info(spec.image)
        if not found:
            raise Unavailable(f"pulled {spec.image} but the engine does not list it", code="IMAGE_UNAVAILABLE")
        return found

    # --- changing --------------------------------------------------------------------------------
    def ensure_network(self, stack: Stack) -> None:
        from docker.errors import NotFound

        try:
            net = self._api.inspect_network(stack.network)
            _check_owned(net.get("Labels"), stack.project, "network", stack.network)
        except NotFound:
            self._api.create_network(stack.network, driver="bridge", labels={LABEL_PROJECT: stack.project})

    def ensure_volumes(self, stack: Stack, specs: list[ServiceSpec], created_by: dict[str, dict]) -> dict[str, dict]:
        """Create missing volumes, labelled with what made them; return the labels of those that existed.

        created_by[service] holds labels recorded on a new volume (e.g. the image's PostgreSQL major),
        so that a later image can be checked against the data before it starts on it.
        """
        from docker.errors import NotFound

        existing = {}
        for spec in specs:
            for name, _ in spec.volumes:
                try:
                    vol = self._api.inspect_volume(name)
                    _check_owned(vol.get("Labels"), stack.project, "volume", name)
                    existing[name] = vol.get("Labels") or {}
                except NotFound:
                    labels = {LABEL_PROJECT: stack.project, LABEL_SERVICE: spec.name, **created_by.get(spec.name, {})}
                    self._api.create_volume(name, labels=labels)
        return existing

    def create_and_start(self, stack: Stack, spec: ServiceSpec) -> str:
        """Create the service's container (name, labels, limits, ports, volumes) and start it."""
        from docker.errors import APIError, NotFound

        api = self._api
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
            cpu_shares=spec.cpu_shares, shm_size=spec.shm_size,
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

    def start(self, container_id: str) -> None:
        self._api.start(container_id)

    def remove_container(self, container_id: str, timeout: int = 10) -> None:
        from docker.errors import NotFound

        try:
            self._api.stop(container_id, timeout=timeout)
            self._api.remove_container(container_id, force=True)
        except NotFound:
            pass

    def remove_volumes(self, project: str) -> list[str]:
        names = [v["Name"] for v in self._api.volumes(filters=project_filter(project)).get("Volumes") or []]
        for name in names:
            self._api.remove_volume(name, force=True)
        return names

    def remove_networks(self, project: str) -> bool:
        nets = self._api.networks(filters=project_filter(project))
        for n in nets:
            self._api.remove_network(n["Id"])
        return bool(nets)


CGROUP = "/sys/fs/cgroup"


def cgroup_memory(container_id: str, root: str = CGROUP) -> Memory | None:
    """A container's memory read from its cgroup on this host (cgroup v2 or v1, the systemd or the
    cgroupfs driver); None when the container's cgroup is not here (a remote engine, another layout)."""
    from pathlib import Path

    base = Path(root)
    for v2 in (base / "system.slice" / f"docker-{container_id}.scope", base / "docker" / container_id):
        if (v2 / "memory.current").is_file():
            stat = _stat_file(v2 / "memory.stat")
            limit = _read_int(v2 / "memory.max")
            return Memory(_read_int(v2 / "memory.current") or 0, stat.get("inactive_file", 0),
                          limit if limit is not None else _host_memory(), None)
    for v1 in (base / "memory" / "docker" / container_id, base / "memory" / "system.slice" /
               f"docker-{container_id}.scope"):
        if (v1 / "memory.usage_in_bytes").is_file():
            stat = _stat_file(v1 / "memory.stat")
            limit = _read_int(v1 / "memory.limit_in_bytes") or 0
            host = _host_memory()
            return Memory(_read_int(v1 / "memory.usage_in_bytes") or 0,
                          stat.get("total_inactive_file", stat.get("inactive_file", 0)),
                          min(limit, host) if host else limit, _read_int(v1 / "memory.max_usage_in_bytes"))
    return None


def _read_int(path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _stat_file(path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, _, v in (line.partition(" ") for line in lines) if v.isdigit()}


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_from_stats(s: dict) -> Memory | None:
    """The memory part of one stats sample. Pure: cgroup v1 (total_inactive_file, max_usage) and
    v2 (inactive_file) alike; an engine that gives no cache figure (Podman) gives 0 here."""
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    stats = mem.get("stats") or {}
    cache = sum(stats.get(f"total_{k}", stats.get(k, 0)) for k in ("inactive_file", "active_file"))
    return Memory(usage, cache, mem.get("limit", 0), mem.get("max_usage"))


def _start_error(spec: ServiceSpec, exc) -> QbctlError:
    text = str(getattr(exc, "explanation", None) or exc)
    if "address already in use" in text or "port is already allocated" in text:
        port = spec.ports[0]
        return Unavailable(f"port {port.host} on {port.host_ip} is in use (the engine could not publish it "
                           f"for {spec.name})", code="PORT_IN_USE",
                           hint=f"stop what holds it, or move {spec.name} with {port.setting}")
    return Unavailable(f"the engine could not start {spec.name}: {text[:300]}", code="START_FAILED")
