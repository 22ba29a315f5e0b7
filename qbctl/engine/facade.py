"""The Docker engine behind one object: `Engine`, whose methods delegate to the modules of qbctl/engine/.

Each module there holds one capability: connection and error wording (connection.py), containers, memory,
exec and files (execution.py), logs, images, creating and removing objects (objects.py), the lock. `Engine`
keeps what a connection is (the SDK's low-level client, where it leads, the ssh tunnel, the round trip) and
gives callers one object to hold, and tests one to fake. Everything returns plain data (dicts, dataclasses),
never SDK objects. Only the modules of qbctl/engine/ import the Docker SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from qbctl.engine import containers, execution, images, logs, memory, objects, remote_lock
from qbctl.engine.connection import CONNECT_TIMEOUT, failure, lost, open_api  # noqa: F401 - engine.*
from qbctl.engine.containers import Container, ContainerState
from qbctl.engine.execution import ExecResult
from qbctl.engine.memory import Memory, cache_from_memstat, cgroup_memory, meminfo, memory_from_stats  # noqa: F401
from qbctl.engine.objects import ServiceLike, StackLike
from qbctl.errors import QbctlError
from qbctl.events import Events, ignore
from qbctl.transport import target

if TYPE_CHECKING:
    from qbctl.transport.ssh import Tunnels

LATENCY_ROUND_TRIPS = 25  # a check's timeout grows by this many round trips to a remote engine


def open_engine(tgt: target.Target, tunnels: Tunnels) -> Engine:
    """A new connection to the engine `tgt` names (connection.open_api; an ssh engine's tunnel from `tunnels`)."""
    api, tunnel, rtt = open_api(tgt, tunnels)
    return Engine(api, tgt.describe(), tgt, tunnel, rtt)


class Engine:
    def __init__(self, api, where: str, tgt: target.Target | None = None, tunnel=None, rtt: float = 0.0) -> None:
        self.api = api  # the Docker SDK's low-level APIClient: only the modules of qbctl/engine/ use it
        self.where = where
        self.target = tgt or target.Target(target.LOCAL_URL, "the default")
        self._tunnel = tunnel
        self.rtt = rtt  # seconds per round trip, measured with the engine's ping (0 for a local engine)
        self._product: str | None = None
        self.cache_reads: dict[str, tuple[float, int | None]] = {}  # Podman: container -> (when, page cache)
        self.last_pull_error = ""  # why pull_reference got nothing

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
                names = " ".join(c.get("Name", "") for c in self.api.version().get("Components") or [])
            except Exception:  # noqa: BLE001 - a guess is fine: only details differ
                names = ""
            self._product = "podman" if "Podman" in names else "docker"
        return self._product

    @property
    def on_this_host(self) -> bool:
        """Whether the engine's containers run on this machine (reached through a local socket)."""
        return self.api.base_url == "http+docker://localhost"  # docker-py's name for a unix socket

    def allow(self, seconds: float) -> float:
        """A timeout meant for a local engine, grown by the measured round trips to this one."""
        return seconds + LATENCY_ROUND_TRIPS * self.rtt

    def failure(self, what: str, exc: Exception) -> QbctlError:
        """An engine call's exception in words (connection.failure)."""
        return failure(self, what, exc)

    # --- looking (engine/containers.py) ---------------------------------------------------------------------------
    def containers(self, project: str, service: str | None = None, running_only: bool = False) -> list[Container]:
        return containers.of_project(self, project, service, running_only)

    def container_on_port(self, port: int) -> tuple[str, str | None] | None:
        return containers.container_on_port(self, port)

    def state(self, container_id: str) -> ContainerState:
        return containers.state(self, container_id)

    def container_image(self, container_id: str) -> tuple[str, str]:
        return containers.image_of(self, container_id)

    def mounts(self, container_id: str) -> dict[str, str]:
        return containers.mounts(self, container_id)

    def published_port(self, container_id: str, port: int) -> int | None:
        return containers.published_port(self, container_id, port)

    # --- memory (engine/memory.py) --------------------------------------------------------------------------------
    def memory(self, container_id: str) -> Memory | None:
        return memory.of_container(self, container_id)

    def host_memory(self, container_id: str | None = None) -> dict:
        return memory.host_memory(self, container_id)

    def cgroup_memory_file(self, container_id: str, names: tuple[str, ...]) -> str | None:
        return memory.cgroup_memory_file(self, container_id, names)

    # --- exec and files (engine/execution.py) ---------------------------------------------------------------------
    def exec_text(self, container_id: str, cmd: list[str], timeout: float = 10) -> str | None:
        return execution.exec_text(self, container_id, cmd, timeout)

    def exec_run(
        self,
        container_id: str,
        cmd: list[str],
        *,
        source: Iterable[bytes] | None = None,
        sink: Callable[[bytes], None] | None = None,
        env: dict[str, str] | None = None,
        user: str = "",
    ) -> ExecResult:
        return execution.exec_run(self, container_id, cmd, source=source, sink=sink, env=env, user=user)

    def exec_detached(self, container_id: str, cmd: list[str]) -> None:
        return execution.exec_detached(self, container_id, cmd)

    def put_file(
        self,
        container_id: str,
        folder: str,
        name: str,
        chunks: Iterable[bytes],
        size: int,
        uid: int = 0,
        gid: int = 0,
        mode: int = 0o644,
    ) -> None:
        return execution.put_file(self, container_id, folder, name, chunks, size, uid, gid, mode)

    def put_archive(self, container_id: str, folder: str, chunks: Iterable[bytes]) -> None:
        return execution.put_archive(self, container_id, folder, chunks)

    def get_file(self, container_id: str, path: str) -> Iterable[bytes] | None:
        return execution.get_file(self, container_id, path)

    # --- logs (engine/logs.py) ------------------------------------------------------------------------------------
    def tail_logs(self, container_id: str, lines: int = 20, since: int | None = None) -> list[str]:
        return logs.tail(self, container_id, lines, since)

    def log_stream(self, container_id: str, follow: bool, tail: int | None):
        return logs.stream(self, container_id, follow, tail)

    # --- images (engine/images.py) --------------------------------------------------------------------------------
    def image_info(self, image: str) -> dict | None:
        return images.info(self, image)

    def pull(self, spec: ServiceLike, events: Events = ignore) -> dict:
        return images.pull(self, spec, events)

    def pull_reference(self, reference: str) -> dict | None:
        return images.pull_reference(self, reference)

    # --- creating and removing (engine/objects.py) ----------------------------------------------------------------
    def ensure_network(self, stack: StackLike) -> None:
        return objects.ensure_network(self, stack)

    def ensure_volumes(
        self, stack: StackLike, specs: Sequence[ServiceLike], created_by: dict[str, dict]
    ) -> dict[str, dict]:
        return objects.ensure_volumes(self, stack, specs, created_by)

    def create_and_start(self, stack: StackLike, spec: ServiceLike) -> str:
        return objects.create_and_start(self, stack, spec)

    def start(self, container_id: str, spec: ServiceLike | None = None) -> None:
        return objects.start(self, container_id, spec)

    def stop(self, container_id: str, timeout: int = 30) -> None:
        return objects.stop(self, container_id, timeout)

    def run_helper(
        self,
        project: str,
        name: str,
        image: str,
        purpose: str,
        *,
        command: list[str],
        environment: dict[str, str],
        binds: dict[str, str],
        mem_limit: int | None = None,
        entrypoint: list[str] | None = None,
        publish: int | None = None,
        publish_ip: str = "127.0.0.1",
        before_start: Callable[[str], None] | None = None,
    ) -> str:
        return objects.run_helper(
            self,
            project,
            name,
            image,
            purpose,
            command=command,
            environment=environment,
            binds=binds,
            mem_limit=mem_limit,
            entrypoint=entrypoint,
            publish=publish,
            publish_ip=publish_ip,
            before_start=before_start,
        )

    def remove_helper(self, project: str, name: str, purpose: str) -> bool:
        return objects.remove_helper(self, project, name, purpose)

    def volumes(self, project: str, service: str | None = None) -> dict[str, dict]:
        return objects.volumes(self, project, service)

    def volume_exists(self, name: str) -> bool:
        return objects.volume_exists(self, name)

    def create_volume(self, project: str, name: str, labels: dict[str, str]) -> None:
        return objects.create_volume(self, project, name, labels)

    def remove_volume(self, project: str, name: str) -> None:
        return objects.remove_volume(self, project, name)

    def remove_container(self, container_id: str, timeout: int = 10) -> None:
        return objects.remove_container(self, container_id, timeout)

    def remove_volumes(self, project: str) -> list[str]:
        return objects.remove_volumes(self, project)

    def remove_networks(self, project: str) -> bool:
        return objects.remove_networks(self, project)

    # --- the lock on a remote engine (engine/remote_lock.py) -------------------------------------------------------
    def try_lock(self, project: str, labels: dict[str, str]) -> tuple[str | None, dict]:
        return remote_lock.try_lock(self, project, labels)

    def unlock(self, lock_id: str) -> None:
        return remote_lock.unlock(self, lock_id)
