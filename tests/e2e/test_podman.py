"""The stack on Podman's Docker-compatible API (Podman 4.3 from Debian), where Podman can run here.

The fixture starts `podman system service` on a socket of its own, with a containers.conf this
sandbox allows (no default ulimits, cgroupfs, events in a file) and its own storage, and loads the
stand-in images into it. Where Podman is not installed or cannot run, these tests are skipped with the
reason on a laptop, and fail in CI: Debian packages Podman and `.ci/run` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests import leftovers
from tests.helpers import ROOT, STANDIN, missing, new_project, no_traceback, qbctl, stack_env

pytestmark = pytest.mark.docker

# Kept between runs: loading the stand-ins takes a while. So each run removes what it made there (checked at
# the end of the module, as the engine's at the end of the run) and sweeps what killed runs left.
STORAGE = Path("/var/lib/qbctl-test-podman")
RUNROOT = Path("/run/qbctl-test-podman")
CONF = """[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
exit_command_delay = 5
"""
IMAGES = (STANDIN["QBCTL_POSTGRES_IMAGE"], STANDIN["QBCTL_REDIS_IMAGE"])


def _podman(*args: str, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", "--root", str(STORAGE), "--runroot", str(RUNROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        **kw,
    )


@pytest.fixture(scope="module")
def podman(docker_client, tmp_path_factory):
    if not shutil.which("podman"):
        missing("Podman is not installed here (apt-get install podman)")
    if os.geteuid() != 0:
        missing("the Podman tests run a rootful Podman service (needs root)")
    folder = tmp_path_factory.mktemp("podman")
    (folder / "containers.conf").write_text(CONF)
    env = dict(os.environ, CONTAINERS_CONF=str(folder / "containers.conf"))
    sock = folder / "podman.sock"
    service = subprocess.Popen(
        [
            "podman",
            "--root",
            str(STORAGE),
            "--runroot",
            str(RUNROOT),
            "system",
            "service",
            "--time=0",
            f"unix://{sock}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "service.log", "w"),
    )
    try:
        import docker

        deadline = time.monotonic() + 20
        while True:
            try:
                api = docker.APIClient(base_url=f"unix://{sock}", version="auto", timeout=10)
                api.ping()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or service.poll() is not None:
                    missing("Podman cannot run here: " + (folder / "service.log").read_text()[-300:])
                time.sleep(0.2)
        for image in IMAGES:
            if _podman("image", "exists", image, env=env).returncode != 0:
                save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
                loaded = _podman("load", "-q", env=env, stdin=save.stdout, timeout=600)
                save.wait()
                if loaded.returncode != 0:
                    missing(f"Podman cannot load {image} here: {loaded.stderr[-300:]}")
        # Can it run a container at all here (cgroups, networking)?
        probe = _podman("run", "--rm", STANDIN["QBCTL_REDIS_IMAGE"], "true", env=env, timeout=120)
        if probe.returncode != 0:
            missing(f"Podman cannot run containers here: {probe.stderr.strip()[-300:]}")
        leftovers.sweep(api)
        yield {"url": f"unix://{sock}", "api": api, "env": env}
        # Stopping the service stops no container (conmon keeps each running): nothing of this run may be left.
        left = leftovers.find(api)
        failed = leftovers.remove(api, left)
        assert not left, "left behind in Podman's storage (removed now): " + "; ".join(map(str, left + failed))
    finally:
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()


@pytest.fixture
def project(podman, tmp_path):
    env = stack_env(new_project(), DOCKER_HOST=podman["url"], QBCTL_PROFILE="production")
    yield env
    proc = qbctl("reset", "--yes", "--no-snapshot", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = leftovers.find(podman["api"], prefix=env["QBCTL_PROJECT"], run=None)
    assert not left, "; ".join(map(str, left))


def ok_json(proc) -> dict:
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_the_stack_on_podman(podman, project, schema_flags):
    env = project
    cold = ok_json(qbctl("up", "--json", env=env, cwd=ROOT))
    assert [(s["name"], s["action"], s["ready"]) for s in cold["services"]] == [
        ("postgres", "create", True),
        ("redis", "create", True),
    ]
    assert cold["engine"]["product"] == "podman"
    warm = ok_json(qbctl("up", "--json", env=env, cwd=ROOT))
    assert {s["action"] for s in warm["services"]} == {"keep"}
    status = ok_json(qbctl("status", "--json", env=env, cwd=ROOT))
    assert not status["notes"], status["notes"]  # the page cache was read from the container's cgroup
    mem = {s["name"]: s["memory_bytes"] for s in status["services"]}
    assert all(mem.values()), mem
    ok_json(qbctl("db", "migrate", *schema_flags, "--json", env=env, cwd=ROOT))
    health = ok_json(qbctl("health", "--json", env=env, cwd=ROOT))
    assert all(c["ok"] for c in health["checks"]), health
    budget = json.loads(qbctl("budget", "--json", env=env, cwd=ROOT).stdout)
    items = {i["name"]: i for i in budget["items"]}
    assert items["postgres"]["measured_mb"] and items["redis"]["measured_mb"]
    # Podman's figures (memory limits, the config hash labels) say what runs is what the settings say
    assert items["postgres"]["differences"] == [] and items["redis"]["differences"] == []
    logs = qbctl("logs", "redis", "--tail", "5", env=env, cwd=ROOT)
    assert logs.returncode == 0 and logs.stdout.strip()
    down = ok_json(qbctl("down", "--json", env=env, cwd=ROOT))
    assert len(down["removed"]) == 2


def test_a_busy_port_on_podman_names_it_and_its_setting(podman, project):
    """Podman has no `publish` filter: the container publishing a port is found all the same."""
    first = ok_json(qbctl("up", "--json", env=project, cwd=ROOT))
    assert first["ok"]
    other = stack_env(
        new_project(), DOCKER_HOST=podman["url"], QBCTL_PROFILE="production", DATABASE_URL=project["DATABASE_URL"]
    )
    try:
        proc = qbctl("up", "--json", env=other, cwd=ROOT)
        no_traceback(proc)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        error = json.loads(proc.stdout)["error"]
        assert error["code"] == "PORT_IN_USE" and error["setting"] == "DATABASE_URL"
        assert f"container {project['QBCTL_PROJECT']}-postgres" in error["message"], error
    finally:
        assert qbctl("reset", "--yes", "--no-snapshot", env=other, cwd=ROOT).returncode == 0


def test_a_start_that_fails_leaves_nothing_and_a_created_container_is_recreated(podman, project):
    """The engine's own refusal to publish (a port taken after the check) is rolled back; a container
    left "created" by some earlier crash is made anew by the next up."""
    from qbctl.config import settings as S
    from qbctl.engine import facade as engine
    from qbctl.stack import spec

    env = project
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        settings = S.load(environ={**env, "REDIS_URL": f"redis://localhost:{port}/0"}, cwd=Path("/nonexistent"))
        stack = spec.build_stack(settings)
        api = podman["api"]
        eng = engine.Engine(api, podman["url"])
        eng.ensure_network(stack)
        eng.ensure_volumes(stack, [stack.get("redis")], {})
        with pytest.raises(Exception) as caught:
            eng.create_and_start(stack, stack.get("redis"))
        assert getattr(caught.value, "code", None) == "PORT_IN_USE", caught.value
        assert caught.value.details["setting"] == "REDIS_URL"
        assert not api.containers(all=True, filters={"name": f"{stack.project}-redis"})  # rolled back
    # A half-created container, as a crash between create and start leaves it:
    redis = spec.build_stack(S.load(environ=env, cwd=Path("/nonexistent"))).get("redis")
    api.create_container(
        redis.image,
        name=f"{stack.project}-redis",
        command=list(redis.command),
        labels={**dict(redis.labels), "io.qbctl.service": "redis", "io.qbctl.config-hash": redis.config_hash()},
    )
    up = ok_json(qbctl("up", "redis", "--json", env=env, cwd=ROOT))
    assert up["services"][0]["action"] == "recreate" and up["services"][0]["ready"]
    assert "created but never started" in up["plan"]
