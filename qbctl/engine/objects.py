"""Creating and removing the project's containers, network and volumes, and temporary helper containers.

Only objects labelled io.qbctl.project=<project> are ever changed or removed; a name qbctl would use that
belongs to an unlabelled object is NAME_CONFLICT (`check_owned`), never a takeover.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from qbctl.engine.connection import engine_call
from qbctl.engine.labels import LABEL_CONFIG, LABEL_HELPER, LABEL_PROJECT, LABEL_SERVICE, project_filter
from qbctl.errors import NotOwned, QbctlError, Unavailable

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine


class PortLike(Protocol):
    @property
    def container(self) -> int: ...
    @property
    def host_ip(self) -> str: ...
    @property
    def host(self) -> int: ...
    @property
    def setting(self) -> str: ...


class ServiceLike(Protocol):
    """What the engine reads of a service to create its container (stack.spec.ServiceSpec is one): the engine
    layer does not import the stack layer above it. Read-only, as the frozen dataclasses that satisfy it."""

    @property
    def name(self) -> str: ...
    @property
    def image(self) -> str: ...
    @property
    def image_setting(self) -> str: ...
    @property
    def command(self) -> tuple[str, ...]: ...
    @property
    def environment(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def ports(self) -> tuple[PortLike, ...]: ...
    @property
    def volumes(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def mem_limit(self) -> int: ...
    @property
    def stop_signal(self) -> str | None: ...
    @property
    def healthcheck(self) -> tuple[str, ...]: ...
    @property
    def cpu_shares(self) -> int | None: ...
    @property
    def shm_size(self) -> str | None: ...
    @property
    def labels(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def restart(self) -> str: ...

    def config_hash(self) -> str: ...


class StackLike(Protocol):
    """The project and network a service's container joins (stack.spec.Stack is one)."""

    @property
    def project(self) -> str: ...
    @property
    def network(self) -> str: ...

    def container_name(self, service: str) -> str: ...


def check_owned(obj_labels: dict | None, project: str, kind: str, name: str) -> None:
    if (obj_labels or {}).get(LABEL_PROJECT) != project:
        raise NotOwned(
            f"a {kind} named {name} exists and was not created by qbctl for project {project}",
            hint="qbctl never touches it: remove or rename it yourself, or use --project OTHER",
        )


@engine_call("creating the network")
def ensure_network(eng: Engine, stack: StackLike) -> None:
    from docker.errors import NotFound

    try:
        net = eng.api.inspect_network(stack.network)
        check_owned(net.get("Labels"), stack.project, "network", stack.network)
    except NotFound:
        eng.api.create_network(stack.network, driver="bridge", labels={LABEL_PROJECT: stack.project})


@engine_call("creating volumes")
def ensure_volumes(
    eng: Engine, stack: StackLike, specs: Sequence[ServiceLike], created_by: dict[str, dict]
) -> dict[str, dict]:
    """Create missing volumes, labelled with what made them; return the labels of those that existed.

    created_by[service] holds labels recorded on a new volume (e.g. the image's PostgreSQL major),
    so that a later image can be checked against the data before it starts on it.
    """
    from docker.errors import NotFound

    existing = {}
    for spec in specs:
        for name, _ in spec.volumes:
            try:
                vol = eng.api.inspect_volume(name)
                check_owned(vol.get("Labels"), stack.project, "volume", name)
                existing[name] = vol.get("Labels") or {}
            except NotFound:
                labels = {LABEL_PROJECT: stack.project, LABEL_SERVICE: spec.name, **created_by.get(spec.name, {})}
                eng.api.create_volume(name, labels=labels)
    return existing


@engine_call("creating a container")
def create_and_start(eng: Engine, stack: StackLike, spec: ServiceLike) -> str:
    """Create the service's container (name, labels, limits, ports, volumes) and start it.

    A container that cannot start (its port taken on the engine's host) is removed again: a
    half-created container ("created") would otherwise be left for the next `up` to trip on."""
    from docker.errors import APIError, NotFound

    api = eng.api
    name = stack.container_name(spec.name)
    try:
        existing = api.inspect_container(name)
        check_owned(existing["Config"].get("Labels"), stack.project, "container", name)
        api.remove_container(name, force=True, v=True)
    except NotFound:
        pass
    host_config = api.create_host_config(
        port_bindings={p.container: (p.host_ip, p.host) for p in spec.ports},
        binds={vol: {"bind": path, "mode": "rw"} for vol, path in spec.volumes},
        mem_limit=spec.mem_limit,
        memswap_limit=spec.mem_limit,
        cpu_shares=spec.cpu_shares,
        shm_size=spec.shm_size,
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
            spec.image,
            command=list(spec.command) or None,
            name=name,
            hostname=spec.name,
            environment=dict(spec.environment),
            labels=labels,
            host_config=host_config,
            ports=[p.container for p in spec.ports],
            stop_signal=spec.stop_signal,
            healthcheck=healthcheck,
            networking_config=networking,
        )["Id"]
    except APIError as exc:
        raise start_error(spec, exc, eng) from None
    try:
        api.start(cid)
    except APIError as exc:
        try:
            api.remove_container(cid, force=True, v=True)
        except Exception:  # noqa: BLE001 - the error below says what matters; the next up recreates it
            pass
        raise start_error(spec, exc, eng) from None
    return cid


@engine_call("starting a container")
def start(eng: Engine, container_id: str, spec: ServiceLike | None = None) -> None:
    from docker.errors import APIError

    try:
        eng.api.start(container_id)
    except APIError as exc:
        if spec is None:
            raise
        raise start_error(spec, exc, eng) from None


def stop(eng: Engine, container_id: str, timeout: int = 30) -> None:
    """Stop a container and keep it (its restart policy does not bring it back)."""
    eng.api.stop(container_id, timeout=timeout)


def run_helper(
    eng: Engine,
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
    """Start a temporary container of this project (no ports, no network): a server on a volume
    for a snapshot or an upgrade. Labelled as a helper, so `up` and `status` leave it alone and
    `reset` removes it; a leftover of an earlier run under the same name is replaced.
    `publish`: a container port published on a free port of `publish_ip` (`published_port` tells which);
    `before_start(id)`: called between create and start (files put in place); the container is
    removed when it fails."""
    from docker.errors import APIError, NotFound

    api = eng.api
    try:
        existing = api.inspect_container(name)
        check_owned(existing["Config"].get("Labels"), project, "container", name)
        api.remove_container(name, force=True, v=True)
    except NotFound:
        pass
    host_config = api.create_host_config(
        binds={vol: {"bind": path, "mode": "rw"} for vol, path in binds.items()},
        mem_limit=mem_limit,
        memswap_limit=mem_limit,
        **({"port_bindings": {publish: (publish_ip, None)}} if publish else {"network_mode": "none"}),
    )
    cid = None
    try:
        cid = api.create_container(
            image,
            command=command,
            name=name,
            environment=environment,
            entrypoint=entrypoint,
            host_config=host_config,
            ports=[publish] if publish else None,
            labels={LABEL_PROJECT: project, LABEL_HELPER: purpose},
        )["Id"]
        if before_start is not None:
            before_start(cid)
        api.start(cid)
    except BaseException as exc:
        # Interrupted while the engine answered the create, the container exists with no id here yet:
        # it is removed by its name (and label).
        try:
            remove_helper(eng, project, name, purpose)
        except Exception:  # noqa: BLE001 - the error under way is the one to report
            pass
        if not isinstance(exc, APIError):
            raise
        reason = str(getattr(exc, "explanation", None) or exc)[:300]
        raise Unavailable(
            f"the engine could not start a temporary container of {image}: {reason}", code="START_FAILED"
        ) from None
    return cid


@engine_call("removing a temporary container")
def remove_helper(eng: Engine, project: str, name: str, purpose: str) -> bool:
    """The temporary container `name` removed if it is this project's helper for `purpose` (found by
    name, so a create that was interrupted before its id came back is found too); False if none."""
    from docker.errors import NotFound

    try:
        found = eng.api.inspect_container(name)
    except NotFound:
        return False
    labels = found["Config"].get("Labels") or {}
    if labels.get(LABEL_PROJECT) != project or labels.get(LABEL_HELPER) != purpose:
        return False
    try:
        eng.api.remove_container(found["Id"], force=True, v=True)
    except NotFound:
        return False
    return True


def volumes(eng: Engine, project: str, service: str | None = None) -> dict[str, dict]:
    """This project's volumes (of one service): name -> labels."""
    found = eng.api.volumes(filters=project_filter(project, service)).get("Volumes") or []
    return {v["Name"]: v.get("Labels") or {} for v in found}


def volume_exists(eng: Engine, name: str) -> bool:
    from docker.errors import NotFound

    try:
        eng.api.inspect_volume(name)
        return True
    except NotFound:
        return False


def create_volume(eng: Engine, project: str, name: str, labels: dict[str, str]) -> None:
    """A new volume of this project; a name already taken is NAME_CONFLICT, never reused."""
    from docker.errors import NotFound

    try:
        vol = eng.api.inspect_volume(name)
    except NotFound:
        eng.api.create_volume(name, labels={**labels, LABEL_PROJECT: project})
        return
    check_owned(vol.get("Labels"), project, "volume", name)
    raise NotOwned(
        f"volume {name} exists already", hint=f"`docker volume rm {name}` removes it (with its data) if it is left over"
    )


def remove_volume(eng: Engine, project: str, name: str) -> None:
    from docker.errors import NotFound

    try:
        check_owned(eng.api.inspect_volume(name).get("Labels"), project, "volume", name)
    except NotFound:
        return
    eng.api.remove_volume(name, force=True)


@engine_call("removing a container")
def remove_container(eng: Engine, container_id: str, timeout: int = 10) -> None:
    """Stop and remove a container with its anonymous volumes: an image that declares a VOLUME (the
    postgres images declare /var/lib/postgresql/data) gets one for that path wherever qbctl mounts
    nothing there (a temporary container with the data volume mounted elsewhere). Named volumes (the
    data) are never removed by this."""
    from docker.errors import NotFound

    try:
        eng.api.stop(container_id, timeout=timeout)
        eng.api.remove_container(container_id, force=True, v=True)
    except NotFound:
        pass


@engine_call("removing volumes")
def remove_volumes(eng: Engine, project: str) -> list[str]:
    names = [v["Name"] for v in eng.api.volumes(filters=project_filter(project)).get("Volumes") or []]
    for name in names:
        eng.api.remove_volume(name, force=True)
    return names


@engine_call("removing the network")
def remove_networks(eng: Engine, project: str) -> bool:
    nets = eng.api.networks(filters=project_filter(project))
    for n in nets:
        eng.api.remove_network(n["Id"])
    return bool(nets)


def start_error(spec: ServiceLike, exc, eng: Engine | None = None) -> QbctlError:
    text = str(getattr(exc, "explanation", None) or exc)
    where = f" of {eng.host}" if eng is not None and eng.remote else ""
    if "address already in use" in text or "port is already allocated" in text:
        port = spec.ports[0]
        return Unavailable(
            f"port {port.host} on {port.host_ip}{where} is in use (the engine could not publish it "
            f"for {spec.name}; nothing of it was left behind)",
            code="PORT_IN_USE",
            hint=f"stop what holds it, or move {spec.name} with {port.setting}"
            + (" (the port in the URL)" if port.setting.endswith("_URL") else ""),
            port=port.host,
            setting=port.setting,
            service=spec.name,
        )
    return Unavailable(
        f"the engine could not start {spec.name}: {text[:300]}",
        code="START_FAILED",
        hint=f"`qbctl logs {spec.name}` and `docker ps -a` on the engine show more",
    )
