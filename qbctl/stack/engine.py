"""The Docker engine: the only module that talks to the Docker SDK.

`connect()` gives an `Engine`; everything qbctl asks of Docker is a method here and returns
plain data (dicts, dataclasses), never SDK objects. Only objects labelled
io.qbctl.project=<project> are ever changed or removed. A name that qbctl would use but that
belongs to an unlabelled object is an error (NAME_CONFLICT), never a takeover.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Callable, Iterable

from qbctl.errors import NotOwned, QbctlError, Unavailable
from qbctl.stack.labels import LABEL_CONFIG, LABEL_HELPER, LABEL_PROJECT, LABEL_SERVICE, project_filter
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
    cache: int  # reclaimable page cache (inactive file pages)
    limit: int
    max_usage: int | None  # the cgroup's own peak (cgroup v1 only), page cache included

    @property
    def without_cache(self) -> int:
        """As `docker stats` shows it: the memory the kernel cannot simply drop."""
        return max(self.usage - self.cache, 0)


@dataclass(frozen=True)
class ExecResult:
    """A command run inside a container: its exit code, what it wrote (stdout unless sent to a sink)."""

    exit_code: int
    stdout: bytes
    stderr: str
    bytes_out: int  # stdout's size, also when it went to a sink


STDERR_KEPT = 64 * 1024  # the tail of a command's stderr kept for its error message


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


def lost(exc: BaseException) -> QbctlError | None:
    """An engine that went away in the middle of a command (restarted, its socket gone) as the error it
    is (DOCKER_UNAVAILABLE, exit 3), not a bug; None for anything else."""
    import requests
    from docker.errors import DockerException

    if isinstance(exc, (requests.exceptions.ConnectionError, DockerException)):
        return Unavailable(f"the Docker engine stopped answering in the middle of the command: {_reason(exc)}",
                           code="DOCKER_UNAVAILABLE",
                           hint="was it restarted? Once `docker info` answers, run the command again: each one "
                                "finishes or puts back what it started")
    return None


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
        """Memory figures from one stats sample; None when the engine gives none."""
        try:
            s = self._api.stats(container_id, stream=False, one_shot=True)
        except Exception:  # noqa: BLE001 - a container that just went away has no figures
            return None
        return memory_from_stats(s)

    def exec_text(self, container_id: str, cmd: list[str], timeout: float = 10) -> str | None:
        """stdout of a command run inside the container, or None when it cannot run."""
        try:
            ex = self._api.exec_create(container_id, cmd, stdout=True, stderr=False)
            out = self._api.exec_start(ex["Id"])
            return out.decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - best effort: evidence only
            return None

    def exec_run(self, container_id: str, cmd: list[str], *, source: Iterable[bytes] | None = None,
                 sink: Callable[[bytes], None] | None = None, env: dict[str, str] | None = None,
                 user: str = "") -> ExecResult:
        """Run cmd in the container; stream `source` to its stdin and its stdout to `sink` as they come.

        Both streams go through one hijacked connection (the engine's attach protocol), so a dump
        of any size passes without a copy inside the container. A reader that stops early (the
        command exited) ends the feeding; an error raised by `sink` (a full disk) ends the command.
        """
        from docker.utils.socket import frames_iter

        api = self._api
        ex = api.exec_create(container_id, cmd, stdin=source is not None, stdout=True, stderr=True,
                             environment=env, user=user)
        sock = api.exec_start(ex["Id"], socket=True)
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(None)  # a restore may say nothing for minutes; the API timeout is for API calls
        feeder = None
        failed: list[BaseException] = []
        if source is not None:
            def feed() -> None:
                try:
                    for chunk in source:
                        raw.sendall(chunk)
                    raw.shutdown(socket.SHUT_WR)  # end of stdin
                except OSError:
                    pass  # the command stopped reading (exited, or was stopped below)
                except BaseException as exc:  # noqa: BLE001 - reading the source failed: reported below
                    failed.append(exc)
                    _shutdown(raw)
            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
        out, err, size = bytearray(), bytearray(), 0
        try:
            for stream, data in frames_iter(sock, tty=False):
                if stream == 1:
                    size += len(data)
                    if sink is not None:
                        sink(data)
                    else:
                        out += data
                else:
                    err = (err + data)[-STDERR_KEPT:]
        finally:
            _shutdown(raw)  # wakes a feeder blocked on a command that stopped reading
            if feeder is not None:
                feeder.join()
            sock.close()
        if failed:
            raise failed[0]
        return ExecResult(self._exit_code(ex["Id"]), bytes(out), err.decode("utf-8", "replace"), size)

    def exec_detached(self, container_id: str, cmd: list[str]) -> None:
        """Start a command in the container and leave it running (a cleanup that need not be waited for)."""
        ex = self._api.exec_create(container_id, cmd, stdout=False, stderr=False)
        self._api.exec_start(ex["Id"], detach=True)

    def _exit_code(self, exec_id: str) -> int:
        for _ in range(100):  # the output ends a moment before the engine records the exit
            info = self._api.exec_inspect(exec_id)
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0)
            time.sleep(0.02)
        return int(self._api.exec_inspect(exec_id).get("ExitCode") or 0)

    def put_file(self, container_id: str, folder: str, name: str, chunks: Iterable[bytes], size: int,
                 uid: int = 0, gid: int = 0, mode: int = 0o644) -> None:
        """Write one file into a container (running or stopped, volumes included) from a stream."""
        self._api.put_archive(container_id, folder, _tar_stream(name, chunks, size, uid, gid, mode))

    def put_archive(self, container_id: str, folder: str, chunks: Iterable[bytes]) -> None:
        """Unpack a tar stream into a container's folder (running or stopped, volumes included)."""
        self._api.put_archive(container_id, folder, chunks)

    def get_file(self, container_id: str, path: str) -> Iterable[bytes] | None:
        """One file of a container (running or stopped, volumes included) as a stream; None if absent."""
        import tarfile

        from docker.errors import NotFound

        try:
            stream, _ = self._api.get_archive(container_id, path, chunk_size=1 << 20)
        except NotFound:
            return None
        reader = _IterReader(stream)
        archive = tarfile.open(fileobj=reader, mode="r|")
        member = next(iter(archive), None)
        if member is None or not member.isfile():
            return None
        fileobj = archive.extractfile(member)
        return iter(lambda: fileobj.read(1 << 20), b"")

    def container_image(self, container_id: str) -> tuple[str, str]:
        """(the image reference a container was created from, that image's ID)."""
        info = self._api.inspect_container(container_id)
        return info["Config"]["Image"], info["Image"]

    def mounts(self, container_id: str) -> dict[str, str]:
        """Volume name -> path inside the container."""
        info = self._api.inspect_container(container_id)
        return {m["Name"]: m["Destination"] for m in info.get("Mounts") or [] if m.get("Type") == "volume"}

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

    def pull(self, spec: ServiceSpec, on_progress=None) -> dict:
        """Pull spec.image and return its inspect data; on failure name the image and the setting."""
        from docker.errors import APIError, DockerException

        repo, _, tag = spec.image.rpartition(":") if ":" in spec.image.rsplit("/", 1)[-1] \
            else (spec.image, "", "latest")
        try:
            for event in self._api.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise APIError(event["error"])
                if on_progress:
                    on_progress(event)
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

    def stop(self, container_id: str, timeout: int = 30) -> None:
        """Stop a container and keep it (its restart policy does not bring it back)."""
        self._api.stop(container_id, timeout=timeout)

    def run_helper(self, project: str, name: str, image: str, purpose: str, *, command: list[str],
                   environment: dict[str, str], binds: dict[str, str], mem_limit: int | None = None,
                   entrypoint: list[str] | None = None) -> str:
        """Start a temporary container of this project (no ports, no network): a server on a volume
        for a snapshot or an upgrade. Labelled as a helper, so `up` and `status` leave it alone and
        `reset` removes it; a leftover of an earlier run under the same name is replaced."""
        from docker.errors import APIError, NotFound

        api = self._api
        try:
            existing = api.inspect_container(name)
            _check_owned(existing["Config"].get("Labels"), project, "container", name)
            api.remove_container(name, force=True)
        except NotFound:
            pass
        host_config = api.create_host_config(
            binds={vol: {"bind": path, "mode": "rw"} for vol, path in binds.items()},
            mem_limit=mem_limit, memswap_limit=mem_limit, network_mode="none")
        try:
            cid = api.create_container(image, command=command, name=name, environment=environment,
                                       entrypoint=entrypoint, host_config=host_config,
                                       labels={LABEL_PROJECT: project, LABEL_HELPER: purpose})["Id"]
            api.start(cid)
        except APIError as exc:
            reason = str(getattr(exc, "explanation", None) or exc)[:300]
            raise Unavailable(f"the engine could not start a temporary container of {image}: {reason}",
                              code="START_FAILED") from None
        return cid

    # --- volumes ---------------------------------------------------------------------------------
    def volumes(self, project: str, service: str | None = None) -> dict[str, dict]:
        """This project's volumes (of one service): name -> labels."""
        found = self._api.volumes(filters=project_filter(project, service)).get("Volumes") or []
        return {v["Name"]: v.get("Labels") or {} for v in found}

    def volume_exists(self, name: str) -> bool:
        from docker.errors import NotFound

        try:
            self._api.inspect_volume(name)
            return True
        except NotFound:
            return False

    def create_volume(self, project: str, name: str, labels: dict[str, str]) -> None:
        """A new volume of this project; a name already taken is NAME_CONFLICT, never reused."""
        from docker.errors import NotFound

        try:
            vol = self._api.inspect_volume(name)
        except NotFound:
            self._api.create_volume(name, labels={**labels, LABEL_PROJECT: project})
            return
        _check_owned(vol.get("Labels"), project, "volume", name)
        raise NotOwned(f"volume {name} exists already", hint=f"`docker volume rm {name}` removes it "
                                                             "(with its data) if it is left over")

    def remove_volume(self, project: str, name: str) -> None:
        from docker.errors import NotFound

        try:
            _check_owned(self._api.inspect_volume(name).get("Labels"), project, "volume", name)
        except NotFound:
            return
        self._api.remove_volume(name, force=True)

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


def _shutdown(raw) -> None:
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _tar_stream(name: str, chunks: Iterable[bytes], size: int, uid: int, gid: int, mode: int):
    """A one-file tar archive as a stream: header, the file's bytes as they come, padding, the end."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.uid, info.gid, info.mode, info.mtime = size, uid, gid, mode, int(time.time())
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            raise OSError(f"{name} grew while it was being copied")
        yield chunk
    if sent != size:
        raise OSError(f"{name}: {sent} bytes read, {size} expected")
    yield b"\0" * (-size % 512) + b"\0" * 1024


class _IterReader:
    """A file-like reader over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self._at = 0

    def read(self, n: int = -1) -> bytes:
        parts, want = [], n
        while want != 0:
            if self._at >= len(self._buf):
                self._buf, self._at = next(self._chunks, b""), 0
                if not self._buf:
                    break
            end = len(self._buf) if want < 0 else min(len(self._buf), self._at + want)
            parts.append(self._buf[self._at:end])
            if want > 0:
                want -= end - self._at
            self._at = end
        return b"".join(parts)


def memory_from_stats(s: dict) -> Memory | None:
    """The memory part of one stats sample. Pure: cgroup v1 (total_inactive_file, max_usage) and
    v2 (inactive_file) alike; an engine that gives no cache figure (Podman) gives 0 here."""
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    stats = mem.get("stats") or {}
    cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return Memory(usage, cache, mem.get("limit", 0), mem.get("max_usage"))


def _start_error(spec: ServiceSpec, exc) -> QbctlError:
    text = str(getattr(exc, "explanation", None) or exc)
    if "address already in use" in text or "port is already allocated" in text:
        port = spec.ports[0]
        return Unavailable(f"port {port.host} on {port.host_ip} is in use (the engine could not publish it "
                           f"for {spec.name})", code="PORT_IN_USE",
                           hint=f"stop what holds it, or move {spec.name} with {port.setting}")
    return Unavailable(f"the engine could not start {spec.name}: {text[:300]}", code="START_FAILED")
