from __future__ import annotations

import pytest

from tests.helpers import STANDIN, TEST_PROJECT_PREFIX, missing


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


def _sweep(client) -> None:
    """Remove stacks that earlier test runs left behind (the engine restarts their containers)."""
    for c in client.containers.list(all=True, filters={"label": "io.qbctl.project"}):
        if c.labels.get("io.qbctl.project", "").startswith(TEST_PROJECT_PREFIX):
            c.remove(force=True)
    for v in client.volumes.list(filters={"label": "io.qbctl.project"}):
        if (v.attrs.get("Labels") or {}).get("io.qbctl.project", "").startswith(TEST_PROJECT_PREFIX):
            v.remove(force=True)
    for n in client.networks.list(filters={"label": "io.qbctl.project"}):
        if (n.attrs.get("Labels") or {}).get("io.qbctl.project", "").startswith(TEST_PROJECT_PREFIX):
            n.remove()
