"""The Docker engine: the only module that talks to the Docker SDK.

`connect()` gives an `Engine`; everything qbctl asks of Docker is a method here and returns
plain data (dicts, dataclasses), never SDK objects. Only objects labelled
io.qbctl.project=<project> are ever changed or removed. A name that qbctl would use but that
belongs to an unlabelled object is an error (NAME_CONFLICT), never a takeover.
"""
from __future__ import annotations

import functools
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Callable, Iterable

from qbctl.engine.labels import (
    LABEL_CONFIG,
    LABEL_HELPER,
    LABEL_LOCK,
    LABEL_LOCK_IMAGE,
    LABEL_PROJECT,
    LABEL_SERVICE,
    project_filter,
)
from qbctl.errors import NotOwned, QbctlError, Unavailable
from qbctl.events import Event, Events, Status, ignore
from qbctl.stack.plan import Observed
from qbctl.stack.spec import ServiceSpec, Stack
from qbctl.transport import target

CONNECT_TIMEOUT = 2  # seconds: an unreachable engine is reported well within 2 s
API_TIMEOUT = 120
LATENCY_ROUND_TRIPS = 25  # a check's timeout grows by this many round trips to a remote engine
CACHE_READ_EVERY = 5.0  # seconds between reads of a container's memory.stat where stats lack cache figures
MEMSTAT_CMD = ["sh", "-c", "cat /sys/fs/cgroup/memory.stat 2>/dev/null || cat /sys/fs/cgroup/memory/memory.stat"]


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
    cache_known: bool = True  # False: the engine gave no cache figure and none could be read (usage has it)

    @property
    def without_cache(self) -> int:
        """The memory the kernel cannot simply drop: anonymous and shared memory, kernel memory.
        (`docker stats` subtracts only inactive file pages; active ones are reclaimed just the same
        before anything is killed.)"""
        return max(self.usage - self.cache, 0)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


@dataclass(frozen=True)
class ExecResult:
    """A command run inside a container: its exit code, what it wrote (stdout unless sent to a sink)."""

    exit_code: int
    stdout: bytes
    stderr: str
    bytes_out: int  # stdout's size, also when it went to a sink


STDERR_KEPT = 64 * 1024  # the tail of a command's stderr kept for its error message


def connect() -> Engine:
    """The engine (DOCKER_HOST, else the Docker context), or DOCKER_UNAVAILABLE / SSH_FAILED (exit 3).

    One Engine per run and engine: an ssh engine's tunnel is opened once, whichever thread asks first.
    """
    tgt = target.resolve()
    with _engines_lock:
        eng = _engines.get(tgt.url)
        if eng is None or not eng.usable:
            eng = _open(tgt)
            _engines[tgt.url] = eng
        return eng


def allow_for_latency(seconds: float) -> float:
    """A timeout meant for a local engine, grown by the measured round trips to a remote one
    (connecting first: the ssh handshake does not count against the checks)."""
    from qbctl.transport import reach

    if not reach.engine_is_remote():
        return seconds
    return connect().allow(seconds)


def forget() -> None:
    """Drop the engines of this run (their tunnels are closed by ssh.close_all)."""
    with _engines_lock:
        _engines.clear()


def _open(tgt: target.Target) -> Engine:
    import docker
    import requests
    from docker.errors import DockerException

    where = tgt.describe()
    tunnel = None
    try:
        if tgt.ssh:
            from qbctl.transport import ssh

            tunnel = ssh.tunnel(tgt.ssh)
            client = docker.DockerClient(base_url=f"unix://{tunnel.docker_socket}", version="auto",
                                         timeout=CONNECT_TIMEOUT + ssh.SSH_TIMEOUT)
        elif tgt.source in ("DOCKER_HOST", "the default"):
            client = docker.from_env(version="auto", timeout=CONNECT_TIMEOUT)  # DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
        else:
            tls = False
            if tgt.tls:
                from docker.tls import TLSConfig

                cert = (tgt.tls["cert"], tgt.tls["key"]) if "cert" in tgt.tls and "key" in tgt.tls else None
                tls = TLSConfig(client_cert=cert, ca_cert=tgt.tls.get("ca"), verify=tgt.tls["verify"])
            client = docker.DockerClient(base_url=tgt.url, tls=tls, version="auto", timeout=CONNECT_TIMEOUT)
    except (DockerException, OSError, requests.RequestException) as exc:
        reason = _reason(exc)
        if tunnel is not None:
            reason = _tunnel_reason(tunnel, tgt.ssh.socket) or reason
        raise Unavailable(f"cannot reach the Docker engine at {where}: {reason}", code="DOCKER_UNAVAILABLE",
                          hint="is the Docker daemon running? Start it, or point DOCKER_HOST / "
                               "DOCKER_CONTEXT at a running engine") from None
    client.api.timeout = API_TIMEOUT
    rtt = 0.0
    if tgt.remote:
        rtt = min(_ping_time(client.api) for _ in range(2))
    return Engine(client.api, where, tgt, tunnel, rtt)


def _ping_time(api) -> float:
    started = time.perf_counter()
    api.ping()
    return time.perf_counter() - started


def _tunnel_reason(tunnel, socket_path: str) -> str | None:
    """What the ssh master said about the engine's socket, in words."""
    text = tunnel.recent_errors()
    if "administratively prohibited" in text:
        return "the ssh server does not allow forwarding a socket (AllowStreamLocalForwarding / DisableForwarding)"
    if "open failed" in text or "connect failed" in text:
        return f"no engine socket at {socket_path} there that this ssh user may open (is the user in the docker group?)"
    if not tunnel.alive:
        return "the ssh connection ended: " + (text.strip().splitlines() or ["no reason given"])[-1][:200]
    return None


def _reason(exc: Exception) -> str:
    text = str(exc)
    for needle, reason in (("FileNotFoundError", "no socket there"), ("Connection refused", "connection refused"),
                           ("Permission denied", "permission denied (are you in the docker group?)"),
                           ("timed out", "no answer within 2s"), ("Name or service not known", "unknown host"),
                           ("RemoteDisconnected", "the connection was closed"),
                           ("Connection aborted", "the connection was closed")):
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


def _engine_call(what: str):
    """An engine call that can fail: a lost connection or a refusal becomes one error in words
    (DOCKER_UNAVAILABLE, SSH_FAILED or ENGINE_ERROR, exit 3), never a raw SDK exception."""
    def wrap(fn):
        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            import requests
            from docker.errors import DockerException

            try:
                return fn(self, *args, **kwargs)
            except (DockerException, OSError, requests.RequestException) as exc:
                raise self.failure(what, exc) from None
        return call
    return wrap


class Engine:
    def __init__(self, api, where: str, tgt: target.Target | None = None, tunnel=None, rtt: float = 0.0) -> None:
        self._api = api
        self.where = where
        self.target = tgt or target.Target(target.LOCAL_URL, "the default")
        self._tunnel = tunnel
        self.rtt = rtt  # seconds per round trip, measured with the engine's ping (0 for a local engine)
        self._product: str | None = None
        self._cache_reads: dict[str, tuple[float, int | None]] = {}  # Podman: container -> (when, page cache)

    @property
    def remote(self) -> bool:
        return self.target.remote

    @property
    def host(self) -> str:
        """The engine's host as a person names it ('vm'), or 'this machine'."""
        return self.target.host

    @property
    def usable(self) -> bool:
        return self._tunnel is None or self._tunnel.alive

    @property
    def tunnel(self):
        """The ssh tunnel of an ssh engine (qbctl.transport.ssh.Tunnel), else None."""
        return self._tunnel

    @property
    def product(self) -> str:
        """'docker' or 'podman' (from the engine's version: Podman names its components)."""
        if self._product is None:
            try:
                names = " ".join(c.get("Name", "") for c in self._api.version().get("Components") or [])
            except Exception:  # noqa: BLE001 - a guess is fine: only details differ
                names = ""
            self._product = "podman" if "Podman" in names else "docker"
        return self._product

    def allow(self, seconds: float) -> float:
        """A timeout meant for a local engine, grown by the measured round trips to this one."""
        return seconds + LATENCY_ROUND_TRIPS * self.rtt

    def failure(self, what: str, exc: Exception) -> QbctlError:
        from docker.errors import APIError

        if isinstance(exc, APIError):
            text = str(getattr(exc, "explanation", None) or exc)
            return Unavailable(f"the engine at {self.where} refused {what}: {text[:300]}", code="ENGINE_ERROR",
                               hint="`docker info` / `docker ps -a` on that engine show its state")
        if self._tunnel is not None and self._tunnel.ended(within=0.5):
            return Unavailable(f"the ssh connection to {self.host} was lost while {what}", code="SSH_FAILED",
                               hint="run the command again; `ssh " + self.host + " true` shows what ssh says")
        return Unavailable(f"lost the Docker engine at {self.where} while {what}: {_reason(exc)}",
                           code="DOCKER_UNAVAILABLE", hint="is the Docker daemon running? `docker info` tells")

    # --- looking ---------------------------------------------------------------------------------
    @_engine_call("listing containers")
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

    @_engine_call("listing containers")
    def container_on_port(self, port: int) -> tuple[str, str | None] | None:
        """(name, qbctl project or None) of a running (or restarting) container that publishes `port`.

        The engine's `publish` filter knows a restarting container's bindings; Podman answers it with
        "publish is an invalid filter", and then the listed ports are matched here."""
        from docker.errors import APIError

        try:
            found = self._api.containers(all=True, filters={"publish": str(port)})
        except APIError as exc:
            if "filter" not in str(exc):
                raise
            found = [c for c in self._api.containers()
                     if any(p.get("PublicPort") == port for p in c.get("Ports") or [])]
        for c in found:
            return c["Names"][0].lstrip("/"), (c.get("Labels") or {}).get(LABEL_PROJECT)
        return None

    @_engine_call("reading a container's state")
    def state(self, container_id: str) -> ContainerState:
        info = self._api.inspect_container(container_id)
        st = info["State"]
        oom = bool(st.get("OOMKilled"))
        restarts = info.get("RestartCount", 0)
        if not oom and (restarts or st.get("Status") != "running"):
            # A restart clears OOMKilled; the engine's event log may still have the kill.
            oom = self._had_oom(container_id, info.get("Created", ""))
        health = st.get("Health") or {}
        status = health.get("Status") or None
        if status == "starting" and not health.get("Log") and self.product == "podman":
            status = None  # Podman runs health checks from systemd timers: without systemd none ever runs
        return ContainerState(st.get("Status", ""), st.get("ExitCode", 0), oom, restarts, status,
                              st.get("StartedAt", ""))

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

        A container on this host has its cgroup read directly (a few ms): the stats API waits for its
        collector's next one-second tick even with one_shot (Docker 20.10), which made `status` take 1.2 s.
        Podman's stats carry no page cache figures: then the container's own cgroup (memory.stat,
        read inside it) gives them, at most every CACHE_READ_EVERY seconds per container (each exec
        leaves a conmon process behind on Podman for minutes; between reads the last figure is used,
        which overstates the memory when the cache grows); failing that, `cache_known` is False."""
        if self.on_this_host:
            local = cgroup_memory(container_id)
            if local is not None:
                return local
        try:
            s = self._api.stats(container_id, stream=False, one_shot=True)
        except Exception:  # noqa: BLE001 - a container that just went away has no figures
            return None
        m = memory_from_stats(s)
        if m is not None and not m.cache_known:
            when, cache = self._cache_reads.get(container_id, (0.0, None))
            if time.monotonic() - when >= CACHE_READ_EVERY:
                cache = cache_from_memstat(self.exec_text(container_id, MEMSTAT_CMD))
                self._cache_reads[container_id] = (time.monotonic(), cache)
            if cache is not None:
                m = Memory(m.usage, min(cache, m.usage), m.limit, m.max_usage, True)
        return m

    def host_memory(self, container_id: str | None = None) -> dict:
        """The engine host's memory: MemTotal from the engine's info; MemAvailable from /proc/meminfo
        read inside a running container (a container sees the host's). Bytes; missing keys unknown."""
        out: dict[str, int] = {}
        try:
            total = self._api.info().get("MemTotal")
            if total:
                out["total"] = int(total)
        except Exception:  # noqa: BLE001 - evidence only
            pass
        if container_id:
            info = meminfo(self.exec_text(container_id, ["cat", "/proc/meminfo"]))
            if "MemAvailable" in info:
                out["available"] = info["MemAvailable"]
            if "total" not in out and "MemTotal" in info:
                out["total"] = info["MemTotal"]
        return out

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

    @_engine_call("reading a log")
    def log_stream(self, container_id: str, follow: bool, tail: int | None):
        """The log as chunks of bytes, as they come; a connection lost on the way is an error in words."""
        raw = self._api.logs(container_id, stream=True, follow=follow, tail=tail if tail is not None else "all")

        def chunks():
            try:
                yield from raw
            except Exception as exc:  # noqa: BLE001 - the stream's errors come from several layers
                raise self.failure("reading a log", exc) from None
        return chunks()

    # --- images ----------------------------------------------------------------------------------
    @_engine_call("inspecting an image")
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
    @_engine_call("creating the network")
    def ensure_network(self, stack: Stack) -> None:
        from docker.errors import NotFound

        try:
            net = self._api.inspect_network(stack.network)
            _check_owned(net.get("Labels"), stack.project, "network", stack.network)
        except NotFound:
            self._api.create_network(stack.network, driver="bridge", labels={LABEL_PROJECT: stack.project})

    @_engine_call("creating volumes")
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

    @_engine_call("creating a container")
    def create_and_start(self, stack: Stack, spec: ServiceSpec) -> str:
        """Create the service's container (name, labels, limits, ports, volumes) and start it.

        A container that cannot start (its port taken on the engine's host) is removed again: a
        half-created container ("created") would otherwise be left for the next `up` to trip on."""
        from docker.errors import APIError, NotFound

        api = self._api
        name = stack.container_name(spec.name)
        try:
            existing = api.inspect_container(name)
            _check_owned(existing["Config"].get("Labels"), stack.project, "container", name)
            api.remove_container(name, force=True, v=True)
        except NotFound:
            pass
        host_config = api.create_host_config(
            port_bindings={p.container: (p.host_ip, p.host) for p in spec.ports},
            binds={vol: {"bind": path, "mode": "rw"} for vol, path in spec.volumes},
            mem_limit=spec.mem_limit, memswap_limit=spec.mem_limit,
            cpu_shares=spec.cpu_shares, shm_size=spec.shm_size,
            restart_policy={"Name": spec.restart},
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
        except APIError as exc:
            raise _start_error(spec, exc, self) from None
        try:
            api.start(cid)
        except APIError as exc:
            try:
                api.remove_container(cid, force=True, v=True)
            except Exception:  # noqa: BLE001 - the error below says what matters; the next up recreates it
                pass
            raise _start_error(spec, exc, self) from None
        return cid

    @_engine_call("starting a container")
    def start(self, container_id: str, spec: ServiceSpec | None = None) -> None:
        from docker.errors import APIError

        try:
            self._api.start(container_id)
        except APIError as exc:
            if spec is None:
                raise
            raise _start_error(spec, exc, self) from None

    def stop(self, container_id: str, timeout: int = 30) -> None:
        """Stop a container and keep it (its restart policy does not bring it back)."""
        self._api.stop(container_id, timeout=timeout)

    def run_helper(self, project: str, name: str, image: str, purpose: str, *, command: list[str],
                   environment: dict[str, str], binds: dict[str, str], mem_limit: int | None = None,
                   entrypoint: list[str] | None = None, publish: int | None = None,
                   before_start: Callable[[str], None] | None = None) -> str:
        """Start a temporary container of this project (no ports, no network): a server on a volume
        for a snapshot or an upgrade. Labelled as a helper, so `up` and `status` leave it alone and
        `reset` removes it; a leftover of an earlier run under the same name is replaced.
        `publish`: a container port published on a free port of 127.0.0.1 (`published_port` tells which);
        `before_start(id)`: called between create and start (files put in place); the container is
        removed when it fails."""
        from docker.errors import APIError, NotFound

        api = self._api
        try:
            existing = api.inspect_container(name)
            _check_owned(existing["Config"].get("Labels"), project, "container", name)
            api.remove_container(name, force=True, v=True)
        except NotFound:
            pass
        host_config = api.create_host_config(
            binds={vol: {"bind": path, "mode": "rw"} for vol, path in binds.items()},
            mem_limit=mem_limit, memswap_limit=mem_limit,
            **({"port_bindings": {publish: ("127.0.0.1", None)}} if publish else {"network_mode": "none"}))
        cid = None
        try:
            cid = api.create_container(image, command=command, name=name, environment=environment,
                                       entrypoint=entrypoint, host_config=host_config,
                                       ports=[publish] if publish else None,
                                       labels={LABEL_PROJECT: project, LABEL_HELPER: purpose})["Id"]
            if before_start is not None:
                before_start(cid)
            api.start(cid)
        except BaseException as exc:
            if cid is not None:
                try:
                    api.remove_container(cid, force=True, v=True)
                except Exception:  # noqa: BLE001 - the error under way is the one to report
                    pass
            if not isinstance(exc, APIError):
                raise
            reason = str(getattr(exc, "explanation", None) or exc)[:300]
            raise Unavailable(f"the engine could not start a temporary container of {image}: {reason}",
                              code="START_FAILED") from None
        return cid

    @_engine_call("reading a container's ports")
    def published_port(self, container_id: str, port: int) -> int | None:
        """The host port a container port is published on (127.0.0.1), or None."""
        ports = (self._api.inspect_container(container_id).get("NetworkSettings") or {}).get("Ports") or {}
        for binding in ports.get(f"{port}/tcp") or []:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return None

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

    @_engine_call("removing a container")
    def remove_container(self, container_id: str, timeout: int = 10) -> None:
        """Stop and remove a container with its anonymous volumes: an image that declares a VOLUME (the
        postgres images declare /var/lib/postgresql/data) gets one for that path wherever qbctl mounts
        nothing there (a temporary container with the data volume mounted elsewhere). Named volumes (the
        data) are never removed by this."""
        from docker.errors import NotFound

        try:
            self._api.stop(container_id, timeout=timeout)
            self._api.remove_container(container_id, force=True, v=True)
        except NotFound:
            pass

    @_engine_call("removing volumes")
    def remove_volumes(self, project: str) -> list[str]:
        names = [v["Name"] for v in self._api.volumes(filters=project_filter(project)).get("Volumes") or []]
        for name in names:
            self._api.remove_volume(name, force=True)
        return names

    @_engine_call("removing the network")
    def remove_networks(self, project: str) -> bool:
        nets = self._api.networks(filters=project_filter(project))
        for n in nets:
            self._api.remove_network(n["Id"])
        return bool(nets)


    # --- the lock on the engine ----------------------------------------------------------------
    @_engine_call("taking the project's lock")
    def try_lock(self, project: str, labels: dict[str, str]) -> tuple[str | None, dict]:
        """Create the never-started container <project>-lock: the engine makes a name unique
        atomically. (its id, {}) when taken now; (None, the holder's labels with its "id") when held."""
        from docker.errors import APIError, NotFound

        name = f"{project}-lock"
        try:
            cid = self._api.create_container(self._lock_image(), command=["lock"], name=name,
                                             labels={LABEL_LOCK: project, **labels})["Id"]
            return cid, {}
        except APIError as exc:
            if exc.status_code != 409 and "already in use" not in str(exc):
                raise
        try:
            info = self._api.inspect_container(name)
        except NotFound:
            return None, {}  # released in between: the caller tries again
        found = info["Config"].get("Labels") or {}
        if found.get(LABEL_LOCK) != project:
            raise NotOwned(f"a container named {name} exists and is not qbctl's lock of project {project}",
                           hint="qbctl never touches it: remove or rename it yourself, or use --project OTHER")
        return None, {**found, "id": info["Id"]}

    @_engine_call("releasing the project's lock")
    def unlock(self, lock_id: str) -> None:
        from docker.errors import NotFound

        try:
            self._api.remove_container(lock_id, force=True)
        except NotFound:
            pass

    def _lock_image(self) -> str:
        """The empty image lock containers are made from (imported once per engine: no pull, no layers)."""
        import io
        import re
        import tarfile

        found = self._api.images(filters={"label": f"{LABEL_LOCK_IMAGE}=1"})
        if found:
            return found[0]["Id"]
        buf = io.BytesIO()
        tarfile.open(fileobj=buf, mode="w").close()
        out = self._api.import_image_from_data(buf.getvalue(), changes=[f"LABEL {LABEL_LOCK_IMAGE}=1"])
        found = self._api.images(filters={"label": f"{LABEL_LOCK_IMAGE}=1"})
        if found:
            return found[0]["Id"]
        ids = re.findall(r"sha256:[0-9a-f]{64}", str(out))
        if not ids:
            raise Unavailable(f"the engine at {self.where} did not import the lock image: {str(out)[:200]}",
                              code="ENGINE_ERROR")
        return ids[-1]


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
            cache = stat.get("inactive_file", 0) + stat.get("active_file", 0)
            return Memory(_read_int(v2 / "memory.current") or 0, cache,
                          limit if limit is not None else _host_memory(), None)
    for v1 in (base / "memory" / "docker" / container_id, base / "memory" / "system.slice" /
               f"docker-{container_id}.scope"):
        if (v1 / "memory.usage_in_bytes").is_file():
            stat = _stat_file(v1 / "memory.stat")
            limit = _read_int(v1 / "memory.limit_in_bytes") or 0
            host = _host_memory()
            return Memory(_read_int(v1 / "memory.usage_in_bytes") or 0,
                          sum(stat.get(f"total_{k}", stat.get(k, 0)) for k in ("inactive_file", "active_file")),
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
    v2 (inactive_file) alike; an engine that gives no cache figures (Podman) gives cache_known=False."""
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    stats = mem.get("stats") or {}
    cache = sum(stats.get(f"total_{k}", stats.get(k, 0)) for k in ("inactive_file", "active_file"))
    return Memory(usage, cache, mem.get("limit", 0), mem.get("max_usage"), bool(stats))


def cache_from_memstat(text: str | None) -> int | None:
    """Reclaimable page cache (active and inactive file pages) from a cgroup's memory.stat, v1 or v2. Pure."""
    values = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    keys = ("active_file", "inactive_file")
    if not all(k in values or f"total_{k}" in values for k in keys):
        return None
    return sum(values.get(f"total_{k}", values.get(k, 0)) for k in keys)


def meminfo(text: str | None) -> dict[str, int]:
    """/proc/meminfo as bytes by key. Pure."""
    out = {}
    for line in (text or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def _start_error(spec: ServiceSpec, exc, eng: Engine | None = None) -> QbctlError:
    text = str(getattr(exc, "explanation", None) or exc)
    where = f" of {eng.host}" if eng is not None and eng.remote else ""
    if "address already in use" in text or "port is already allocated" in text:
        port = spec.ports[0]
        return Unavailable(f"port {port.host} on {port.host_ip}{where} is in use (the engine could not publish it "
                           f"for {spec.name}; nothing of it was left behind)", code="PORT_IN_USE",
                           hint=f"stop what holds it, or move {spec.name} with {port.setting}"
                                + (" (the port in the URL)" if port.setting.endswith("_URL") else ""),
                           port=port.host, setting=port.setting, service=spec.name)
    return Unavailable(f"the engine could not start {spec.name}: {text[:300]}", code="START_FAILED",
                       hint=f"`qbctl logs {spec.name}` and `docker ps -a` on the engine show more")
