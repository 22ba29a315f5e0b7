"""What a test run left on an engine: the containers, volumes, networks and images of its own projects.

Every project a run makes is named qbtest-<run>-<8 hex> (tests/helpers.py `new_project`): qbctl labels its
stacks with it (io.qbctl.project; io.qbctl.lock on an engine lock), and docker compose names its containers,
volumes and network after it and labels them with it. The containers and images the tests make themselves,
beside qbctl, carry the label qbctl-test-run=<run>. So a run finds its own leftovers and never another's:
runs that share an engine at the same time (a developer's and CI's) each check only what is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from tests.helpers import RUN, RUN_LABEL, RUN_PREFIX, TEST_PROJECT_PREFIX

OWNER_LABELS = ("io.qbctl.project", "io.qbctl.lock", "com.docker.compose.project")


@dataclass(frozen=True)
class Left:
    kind: str  # container, volume, network or image
    id: str
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.detail})"


def _owner(name: str, labels: dict | None, prefix: str, run: str | None) -> str | None:
    labels = labels or {}
    for key in OWNER_LABELS:
        if labels.get(key, "").startswith(prefix):
            return f"{key}={labels[key]}"
    if run is not None and labels.get(RUN_LABEL) == run:
        return f"{RUN_LABEL}={run}"
    if name.startswith(prefix):
        return "named after a project of this run"
    return None


def find(api, prefix: str = RUN_PREFIX, run: str | None = RUN) -> list[Left]:
    """Everything of this run on the engine behind `api` (docker's low-level APIClient, or Podman's API):
    what belongs to a project named `prefix`..., and what carries the label of `run` (None: not asked)."""
    left = []
    for c in api.containers(all=True):
        name = (c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/")
        owner = _owner(name, c.get("Labels"), prefix, run)
        if owner:
            restart = ""
            try:
                restart = api.inspect_container(c["Id"])["HostConfig"]["RestartPolicy"]["Name"]
            except Exception:  # noqa: BLE001 - gone meanwhile: still worth naming
                pass
            state = c.get("State") or c.get("Status") or "?"
            left.append(Left("container", c["Id"], name, f"{state}, restart {restart or 'no'}, {owner}"))
    for v in api.volumes().get("Volumes") or []:
        owner = _owner(v["Name"], v.get("Labels"), prefix, run)
        if owner:
            left.append(Left("volume", v["Name"], v["Name"], f"created {v.get('CreatedAt', '?')}, {owner}"))
    for n in api.networks():
        owner = _owner(n["Name"], n.get("Labels"), prefix, run)
        if owner:
            left.append(Left("network", n["Id"], n["Name"], owner))
    for i in api.images():
        tags = [t for t in i.get("RepoTags") or [] if t != "<none>:<none>"]
        owner = _owner(next((t for t in tags if t.startswith(prefix)), ""), i.get("Labels"), prefix, run)
        if owner:
            left.append(Left("image", i["Id"], ", ".join(tags) or i["Id"][7:19], owner))
    return left


def remove(api, left: list[Left]) -> list[str]:
    """Remove what `find` found, containers first; the ones that could not be removed, with why."""
    failed = []
    order = {"container": 0, "network": 1, "volume": 2, "image": 3}
    for item in sorted(left, key=lambda i: order[i.kind]):
        try:
            if item.kind == "container":
                api.remove_container(item.id, force=True, v=True)
            elif item.kind == "network":
                api.remove_network(item.id)
            elif item.kind == "volume":
                api.remove_volume(item.id, force=True)
            else:
                api.remove_image(item.id, force=True)
        except Exception as exc:  # noqa: BLE001 - named in the report, the run fails anyway
            if "No such" not in str(exc) and "not found" not in str(exc).lower():
                failed.append(f"{item}: {exc}")
    return failed


# --- other runs' leftovers: swept when old --------------------------------------------------------------

STALE_AFTER = 30 * 60  # seconds: no test stack lives this long; a younger one may be another run's


def _stale(created: str) -> bool:
    from datetime import datetime

    try:
        when = datetime.fromisoformat(created[:19]).replace(tzinfo=UTC)
    except ValueError:
        return True
    return (datetime.now(UTC) - when).total_seconds() > STALE_AFTER


def _theirs(project: str) -> bool:
    """A test project of another run: this run's own are checked at its end (pytest_sessionfinish), not swept."""
    return project.startswith(TEST_PROJECT_PREFIX) and not project.startswith(RUN_PREFIX)


def sweep(api) -> None:
    """Remove stacks that earlier test runs left behind on the engine behind `api` (a run that was killed;
    the engine restarts their containers).

    Only old ones: two test runs may share one engine (a developer's and CI's), and each must
    leave the other's stacks alone. Another run may sweep the same object first: gone is swept."""
    label = {"label": "io.qbctl.project"}
    for c in api.containers(all=True, filters=label):
        if _theirs(c["Labels"].get("io.qbctl.project", "")) and c["Created"] < _epoch_ago():
            _gone_is_fine(api.remove_container, c["Id"], force=True)
    for c in api.containers(all=True, filters={"label": "io.qbctl.lock"}):  # a crashed test's engine lock
        if _theirs(c["Labels"].get("io.qbctl.lock", "")) and c["Created"] < _epoch_ago():
            _gone_is_fine(api.remove_container, c["Id"], force=True)
    projects_alive = {c["Labels"].get("io.qbctl.project") for c in api.containers(all=True, filters=label)}
    for v in api.volumes(filters=label).get("Volumes") or []:
        project = (v.get("Labels") or {}).get("io.qbctl.project", "")
        if _theirs(project) and project not in projects_alive and _stale(v["CreatedAt"]):
            _gone_is_fine(api.remove_volume, v["Name"], force=True)
    for n in api.networks(filters=label):
        project = (n.get("Labels") or {}).get("io.qbctl.project", "")
        if _theirs(project) and project not in projects_alive and _stale(n["Created"]):
            _gone_is_fine(api.remove_network, n["Id"])


def _gone_is_fine(remove, *args, **kwargs) -> None:
    import docker.errors

    try:
        remove(*args, **kwargs)
    except docker.errors.NotFound:  # another test run swept it first
        pass


def _epoch_ago() -> float:
    import time

    return time.time() - STALE_AFTER
