from __future__ import annotations

import pytest

from tests import leftovers
from tests.helpers import (
    HOST_TIMESCALEDB,
    STANDIN,
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
    leftovers.sweep(client.api)
    yield client
    leftovers.sweep(client.api)


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
        missing(
            f"the host has TimescaleDB ({HOST_TIMESCALEDB}) and the postgres stand-in {image} does not: "
            "run tests/images/build.sh, which copies it in"
        )
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


# --- the run's end: nothing of this run is left on the engine ----------------------------------------------


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when it left a container, volume, network or image of its own projects on the engine
    (tests/leftovers.py: only this run's, never another run's), naming each; then remove them, so that even
    a failed run leaves the engine as it found it. pytest-xdist's workers leave the check to the controller,
    which runs it once every worker is done."""
    if hasattr(session.config, "workerinput"):
        return
    api = _engine_api()
    if api is None:  # no engine here: nothing can have been left on one
        return
    left = leftovers.find(api)
    if not left:
        return
    session.config.stash[LEFT_BEHIND] = [str(item) for item in left] + leftovers.remove(api, left)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


LEFT_BEHIND = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, config):
    left = config.stash.get(LEFT_BEHIND, None)
    if left:
        terminalreporter.write_sep("=", "this test run left these behind on the engine (removed now)", red=True)
        for line in left:
            terminalreporter.write_line(line, red=True)
        terminalreporter.write_line("a test that makes something must remove it in its teardown", red=True)


def _engine_api():
    try:
        import docker

        api = docker.from_env(version="auto", timeout=10).api  # the engine docker_client uses
        api.ping()
        return api
    except Exception:  # noqa: BLE001 - no engine answers
        return None
