"""Shared test helpers: free ports, qbctl as a subprocess, the stand-in images."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))
# The stand-ins' tag: tests/images/build.sh builds under QBCTL_STANDIN_TAG too, so a run with other
# host files (TimescaleDB hidden, as on a new machine) has images of its own beside everyone else's.
STANDIN_TAG = os.environ.get("QBCTL_STANDIN_TAG") or "test"


def standin(name: str) -> str:
    """A stand-in image's reference: standin("postgres") -> qbctl-standin/postgres:test."""
    return f"qbctl-standin/{name}:{STANDIN_TAG}"


STANDIN = {
    "QBCTL_POSTGRES_IMAGE": standin("postgres"),
    "QBCTL_REDIS_IMAGE": standin("redis"),
    "QBCTL_ADMINER_IMAGE": standin("adminer"),
    "QBCTL_REDIS_COMMANDER_IMAGE": standin("redis-commander"),
}
TEST_PROJECT_PREFIX = "qbtest-"
# This test run's own component of every name it makes. Runs that share one engine at the same time (a
# developer's and CI's) each check at the end that they left nothing (tests/leftovers.py), and look only at
# their own. The environment carries it to pytest-xdist's workers, so one run has one id.
RUN = os.environ.setdefault("QBCTL_TEST_RUN", uuid.uuid4().hex[:6])
RUN_PREFIX = f"{TEST_PROJECT_PREFIX}{RUN}-"
RUN_LABEL = "qbctl-test-run"  # on the containers and images the tests make themselves, beside qbctl
PASSWORD = "s3cret-Pw-for-tests"


def missing(reason: str) -> NoReturn:
    """A missing prerequisite that an install step provides (Docker, Redis, PostgreSQL, sshd, Podman, the
    stand-in images: `.ci/run` installs or builds them): a skip on a laptop, a failure in CI."""
    if IN_CI:
        pytest.fail(f"CI needs this: {reason}")
    pytest.skip(reason)


# Where a developer's build of TimescaleDB installs it for the host's PostgreSQL 15 (make install).
HOST_TIMESCALEDB = Path("/usr/lib/postgresql/15/lib/timescaledb.so")


def host_timescaledb() -> bool:
    return HOST_TIMESCALEDB.exists()


def timescaledb_absent(needs: str) -> NoReturn:
    """TimescaleDB is absent: a skip with the reason, in CI too. It is not packaged (Debian has none, and
    its source is not built here), so no install step can provide it and its absence is no missing step of
    `.ci/run`. Where it is installed the tests that need it run and must pass."""
    pytest.skip(
        f"TimescaleDB is not installed for PostgreSQL 15 on this machine ({HOST_TIMESCALEDB} is "
        f"missing): it is not packaged, so no install step provides it; {needs}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n different free ports: each held open until all are chosen (free_port() twice may give one port)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def new_project() -> str:
    """A project name of this run: qbtest-<run>-<8 hex>."""
    return RUN_PREFIX + uuid.uuid4().hex[:8]


def stack_env(project: str, **extra: str) -> dict[str, str]:
    """Environment for a throwaway stack: own project, free ports, stand-in images, a password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL"))}
    env.update(STANDIN)
    pg, rd, adminer, commander = free_ports(4)
    env.update(
        {
            "QBCTL_PROJECT": project,
            "DATABASE_URL": f"postgresql://qb_user:{PASSWORD}@localhost:{pg}/qb_trading_dev",
            "REDIS_URL": f"redis://localhost:{rd}/0",
            "QBCTL_ADMINER_PORT": str(adminer),
            "QBCTL_REDIS_COMMANDER_PORT": str(commander),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    env.update(extra)
    return env


def qbctl(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 180, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run qbctl as a user would: a new process, no terminal."""
    return subprocess.run(
        [sys.executable, "-m", "qbctl", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def remove_stack(env: dict[str, str], cwd: Path | None = None) -> None:
    """A test's teardown of its project: `qbctl reset --yes --no-snapshot` (a snapshot only costs time
    there, and when one fails reset removes nothing), then nothing of the project may be left on the engine:
    a teardown that leaves something fails, naming it, in the test that made it."""
    proc = qbctl("reset", "--yes", "--no-snapshot", env=env, cwd=cwd, timeout=300)
    project = env["QBCTL_PROJECT"]
    assert proc.returncode == 0, f"reset of {project}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    if env.get("DOCKER_HOST", os.environ.get("DOCKER_HOST")) != os.environ.get("DOCKER_HOST"):
        return  # another engine (Podman's): its test checks it
    import docker

    from tests import leftovers

    api = docker.from_env(version="auto", timeout=10).api
    left = leftovers.find(api, prefix=project, run=None)
    assert not left, f"reset left these of {project}: " + "; ".join(map(str, left))


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def run_once(client, image: str, command: list[str], **kwargs) -> bytes:
    """A throwaway container's output. It is removed with its anonymous volumes: the postgres and redis
    images declare a VOLUME, which gets one wherever nothing is mounted at its path."""
    labels = {**kwargs.pop("labels", {}), RUN_LABEL: RUN}  # found by the run's end check if ever left
    container = client.containers.create(image, command, labels=labels, **kwargs)
    try:
        container.start()
        container.wait()
        return container.logs()
    finally:
        container.remove(force=True, v=True)
