"""The project's containers as the engine lists them, one container's state (OOM kills from the event
log), its image, mounts and published ports: plain data, never SDK objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING

from qbctl.engine.connection import engine_call
from qbctl.engine.labels import LABEL_PROJECT, LABEL_SERVICE, project_filter

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine


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


@engine_call("listing containers")
def of_project(eng: Engine, project: str, service: str | None = None, running_only: bool = False) -> list[Container]:
    """This project's containers (one list call, no inspect per container)."""
    out = []
    for c in eng.api.containers(all=not running_only, filters=project_filter(project, service)):
        labels = c.get("Labels") or {}
        ports = tuple(sorted({f"{p.get('IP')}:{p['PublicPort']}" for p in c.get("Ports", []) if p.get("PublicPort")}))
        out.append(
            Container(
                c["Id"],
                c["Names"][0].lstrip("/"),
                labels.get(LABEL_SERVICE),
                c.get("State", ""),
                c.get("Status", ""),
                c.get("Image", ""),
                c.get("ImageID", ""),
                labels,
                ports,
            )
        )
    return out


@engine_call("listing containers")
def container_on_port(eng: Engine, port: int) -> tuple[str, str | None] | None:
    """(name, qbctl project or None) of a running (or restarting) container that publishes `port`.

    The engine's `publish` filter knows a restarting container's bindings; Podman answers it with
    "publish is an invalid filter", and then the listed ports are matched here."""
    from docker.errors import APIError

    try:
        found = eng.api.containers(all=True, filters={"publish": str(port)})
    except APIError as exc:
        if "filter" not in str(exc):
            raise
        found = [c for c in eng.api.containers() if any(p.get("PublicPort") == port for p in c.get("Ports") or [])]
    for c in found:
        return c["Names"][0].lstrip("/"), (c.get("Labels") or {}).get(LABEL_PROJECT)
    return None


@engine_call("reading a container's state")
def state(eng: Engine, container_id: str) -> ContainerState:
    info = eng.api.inspect_container(container_id)
    st = info["State"]
    oom = bool(st.get("OOMKilled"))
    restarts = info.get("RestartCount", 0)
    if not oom and (restarts or st.get("Status") != "running"):
        # A restart clears OOMKilled; the engine's event log may still have the kill.
        oom = _had_oom(eng, container_id, info.get("Created", ""))
    health = st.get("Health") or {}
    status = health.get("Status") or None
    if status == "starting" and not health.get("Log") and eng.product == "podman":
        status = None  # Podman runs health checks from systemd timers: without systemd none ever runs
    return ContainerState(st.get("Status", ""), st.get("ExitCode", 0), oom, restarts, status, st.get("StartedAt", ""))


def _had_oom(eng: Engine, container_id: str, created: str) -> bool:
    from datetime import datetime

    try:
        since = (
            int(datetime.fromisoformat(created[:19]).replace(tzinfo=UTC).timestamp())
            if created
            else int(time.time()) - 3600
        )
        events = eng.api.events(
            since=since - 1,
            until=int(time.time()) + 1,
            decode=True,
            filters={"container": container_id, "event": "oom"},
        )
        return any(True for _ in events)
    except Exception:  # noqa: BLE001 - evidence only
        return False


def image_of(eng: Engine, container_id: str) -> tuple[str, str]:
    """(the image reference a container was created from, that image's ID)."""
    info = eng.api.inspect_container(container_id)
    return info["Config"]["Image"], info["Image"]


def mounts(eng: Engine, container_id: str) -> dict[str, str]:
    """Volume name -> path inside the container."""
    info = eng.api.inspect_container(container_id)
    return {m["Name"]: m["Destination"] for m in info.get("Mounts") or [] if m.get("Type") == "volume"}


@engine_call("reading a container's ports")
def published_port(eng: Engine, container_id: str, port: int) -> int | None:
    """The host port a container port is published on (127.0.0.1), or None."""
    ports = (eng.api.inspect_container(container_id).get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(f"{port}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None
