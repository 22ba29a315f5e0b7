from __future__ import annotations

from datetime import UTC

import pytest

from tests.helpers import (
    HOST_TIMESCALEDB,
    STANDIN,
    TEST_PROJECT_PREFIX,
    host_timescaledb,
    missing,
    run_once,
    timescaledb_absent,
)


@pytest.fixture(scope="session")
def docker_client():
    """A real Docker engine with the stand-in images (tests/images/build.sh builds them)."""
    try:
        import docker

        client = docker.from_env(version="auto", timeout=5)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any reason means: no engine here
        missing(f"no Docker engine answers ({exc.__class__.__name__}); start dockerd")
    for image in STANDIN.values():
        try:
            client.images.get(image)
        except Exception:  # noqa: BLE001
            missing(f"stand-in image {image} is missing; run tests/images/build.sh")
    _sweep(client)
    yield client
    _sweep(client)


STALE_AFTER = 30 * 60  # seconds: no test stack lives this long; a younger one may be another run's


def _stale(created: str) -> bool:
    from datetime import datetime

    try:
        when = datetime.fromisoformat(created[:19]).replace(tzinfo=UTC)
    except ValueError:
        return True
    return (datetime.now(UTC) - when).total_seconds() > STALE_AFTER


def _sweep(client) -> None:
    """Remove stacks that earlier test runs left behind (the engine restarts their containers).

    Only old ones: two test runs may share one engine (a developer's and CI's), and each must
    leave the other's stacks alone. Another run may sweep the same object first: gone is swept."""
    label = {"label": "io.qbctl.project"}
    for c in client.api.containers(all=True, filters=label):
        if c["Labels"].get("io.qbctl.project", "").startswith(TEST_PROJECT_PREFIX) and c["Created"] < _epoch_ago():
            _gone_is_fine(client.api.remove_container, c["Id"], force=True)
    for c in client.api.containers(all=True, filters={"label": "io.qbctl.lock"}):  # a crashed test's engine lock
        if c["Labels"].get("io.qbctl.lock", "").startswith(TEST_PROJECT_PREFIX) and c["Created"] < _epoch_ago():
            _gone_is_fine(client.api.remove_container, c["Id"], force=True)
    projects_alive = {c["Labels"].get("io.qbctl.project") for c in client.api.containers(all=True, filters=label)}
    for v in client.api.volumes(filters=label).get("Volumes") or []:
        project = (v.get("Labels") or {}).get("io.qbctl.project", "")
        if project.startswith(TEST_PROJECT_PREFIX) and project not in projects_alive and _stale(v["CreatedAt"]):
            _gone_is_fine(client.api.remove_volume, v["Name"], force=True)
    for n in client.api.networks(filters=label):
        project = (n.get("Labels") or {}).get("io.qbctl.project", "")
        if project.startswith(TEST_PROJECT_PREFIX) and project not in projects_alive and _stale(n["Created"]):
            _gone_is_fine(client.api.remove_network, n["Id"])


def _gone_is_fine(remove, *args, **kwargs) -> None:
    import docker.errors

    try:
        remove(*args, **kwargs)
    except docker.errors.NotFound:  # another test run swept it first
        pass


def _epoch_ago() -> float:
    import time

    return time.time() - STALE_AFTER


@pytest.fixture(scope="session")
def standin_timescaledb(docker_client) -> bool:
    """Whether the postgres stand-in carries TimescaleDB. tests/images/build.sh copies the host's into it
    where a developer built one (TimescaleDB is not packaged, so a new machine has none, and no step of
    `.ci/run` can install it). A stand-in without it on a host with it is an image built before, a missing
    build step: a failure in CI, like any other."""
    image = STANDIN["QBCTL_POSTGRES_IMAGE"]
    out = run_once(docker_client, image, ["sh", "-c", "ls /usr/lib/postgresql/*/lib/"], entrypoint=[])
    carried = b"timescaledb.so" in out
    if not carried and host_timescaledb():
        missing(f"the host has TimescaleDB ({HOST_TIMESCALEDB}) and the postgres stand-in {image} does not: "
                "run tests/images/build.sh, which copies it in")
    return carried


@pytest.fixture
def needs_standin_timescaledb(request, standin_timescaledb):
    """For a test that cannot run without TimescaleDB: skipped where the stand-in has none, in CI too, with
    what the test needs it for (its `timescaledb` marker's reason)."""
    if not standin_timescaledb:
        marker = request.node.get_closest_marker("timescaledb")
        needs = marker.args[0] if marker and marker.args else "the test needs it"
        timescaledb_absent(f"{needs}; the postgres stand-in carries none")


@pytest.fixture(scope="session")
def schema_flags(standin_timescaledb) -> tuple[str, ...]:
    """What `db migrate`, `db reset` and `ci setup` take on this machine: nothing where the stand-in carries
    TimescaleDB (the QB schema with its hypertables, policies and bars), `--without-timescaledb` where it
    does not (the plain schema), so that what does not need TimescaleDB is tested on a new machine too."""
    return () if standin_timescaledb else ("--without-timescaledb",)
