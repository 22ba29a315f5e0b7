"""The stack on a "VM" driven from a "laptop": a real sshd in front of this machine's engine, qbctl
run from a network namespace of its own (tests/sshlab.py), through ssh:// and through a Docker
context (with no config.json), without and with 50 ms of added round trip on the ssh path."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import sshlab
from tests.helpers import ROOT, missing, new_project, no_traceback, stack_env

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def lab(docker_client):
    why = sshlab.available()
    if why:
        missing(f"the ssh lab: {why}")
    lab = sshlab.Lab(delay=0.025).start()  # enginevm-slow: 25 ms each way, 50 ms per round trip
    yield lab
    lab.close()


def run(lab, *args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    """qbctl on the laptop: its own network namespace, the engine's socket hidden."""
    argv = lab.wrap([sys.executable, "-m", "qbctl", *args])
    return subprocess.run(
        argv, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )  # sql/ for db migrate


def ok_json(proc: subprocess.CompletedProcess) -> dict:
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def remote(lab, docker_client):
    """A project on the VM, reached through DOCKER_HOST=ssh://enginevm; removed afterwards."""
    env = lab.env(stack_env(new_project()), host="ssh://enginevm")
    yield env
    run(lab, "reset", "--yes", "--no-snapshot", env=env)
    _assert_gone(docker_client, env["QBCTL_PROJECT"])


def _assert_gone(client, project: str) -> None:
    label = {"label": f"io.qbctl.project={project}"}
    assert not client.api.containers(all=True, filters=label)
    assert not client.api.volumes(filters=label).get("Volumes")
    assert not client.api.containers(all=True, filters={"label": f"io.qbctl.lock={project}"})


def test_the_whole_life_of_a_production_stack_over_ssh(lab, remote, docker_client, schema_flags):
    env = remote
    project = env["QBCTL_PROJECT"]
    cold = ok_json(run(lab, "up", "--profile", "production", "--json", env=env))
    assert [(s["name"], s["action"], s["ready"]) for s in cold["services"]] == [
        ("postgres", "create", True),
        ("redis", "create", True),
    ]
    assert cold["engine"]["remote"] is True and cold["engine"]["host"] == "enginevm"
    assert cold["engine"]["profile"] == "production"
    # On the engine's host, as the production profile makes them.
    containers = docker_client.containers.list(filters={"label": f"io.qbctl.project={project}"})
    assert sorted(c.labels["io.qbctl.service"] for c in containers) == ["postgres", "redis"]
    for c in containers:
        assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
        bindings = [b for binds in c.attrs["HostConfig"]["PortBindings"].values() for b in binds]
        assert all(b["HostIp"] == "127.0.0.1" for b in bindings)
    limits = {c.labels["io.qbctl.service"]: c.attrs["HostConfig"]["Memory"] // 2**20 for c in containers}
    assert limits == {"postgres": 300, "redis": 150}

    warm = ok_json(run(lab, "up", "--profile", "production", "--json", env=env))
    assert {s["action"] for s in warm["services"]} == {"keep"}
    assert {c.id for c in containers} == {
        c.id for c in docker_client.containers.list(filters={"label": f"io.qbctl.project={project}"})
    }

    migrated = ok_json(run(lab, "db", "migrate", *schema_flags, "--json", env=env))
    assert migrated["applied"], migrated
    env_prod = {**env, "QBCTL_PROFILE": "production"}
    health = ok_json(run(lab, "health", "--json", env=env_prod))
    names = {c["name"]: c["ok"] for c in health["checks"]}
    assert names["postgres"] and names["redis"] and names["migrations"] and names["docker"]

    status = ok_json(run(lab, "status", "--json", env=env_prod))
    assert [(s["name"], s["state"]) for s in status["services"]] == [("postgres", "running"), ("redis", "running")]
    assert all(s["memory_bytes"] for s in status["services"])

    # budget: the VM's own memory, measured (MemTotal from the engine, MemAvailable from /proc/meminfo).
    proc = run(lab, "budget", "--json", env=env_prod)
    no_traceback(proc)
    budget = json.loads(proc.stdout)
    items = {i["name"]: i for i in budget["items"]}
    mem_total = docker_client.info()["MemTotal"] / 2**20
    assert abs(items["total"]["measured_mb"] - mem_total) < 1
    assert "measured on enginevm" in items["os"]["derivation"] and items["os"]["measured_mb"] > 0
    assert items["postgres"]["measured_mb"] and items["redis"]["measured_mb"]
    # This "VM" is a shared 24 GB machine: its other processes are over the os share, and that is said.
    if not budget["ok"]:
        assert proc.returncode == 1 and budget["error"]["code"] == "BUDGET_EXCEEDED"
        assert {n for n, i in items.items() if not i["ok"]} <= {"os"}

    logs = run(lab, "logs", "redis", "--tail", "20", env=env)
    assert logs.returncode == 0 and "Ready to accept connections" in logs.stdout, logs.stderr

    down = ok_json(run(lab, "down", "--json", env=env))
    assert sorted(down["removed"]) == sorted(f"{project}-{s}" for s in ("postgres", "redis"))
    assert docker_client.api.volumes(filters={"label": f"io.qbctl.project={project}"})["Volumes"]  # data stays
    reset = ok_json(run(lab, "reset", "--yes", "--json", env=env))
    assert sorted(reset["volumes_removed"]) == [f"{project}_pgdata", f"{project}_redisdata"]
    # The data was saved first, through the tunnel, into the laptop's project folder.
    saved = ROOT / ".qbctl" / "snapshots" / reset["snapshot"]
    try:
        meta = json.loads((saved / "meta.json").read_text())
        assert meta["project"] == project and meta["postgres"]["tables"]["public.market_data"]["rows"] == 0
        assert sorted(meta["files"]) == ["postgres.dump", "redis.rdb"]
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    _assert_gone(docker_client, project)
    assert not list((lab.dir / "tmp").glob("qbctl-ssh-*"))  # every tunnel closed, its folder removed


def test_a_context_with_50ms_of_latency_and_no_config_json(lab, docker_client, schema_flags):
    """DOCKER_CONTEXT names a context of the store; no ~/.docker/config.json exists; 50 ms per round trip."""
    assert not (lab.docker_config / "config.json").exists()
    env = lab.env(stack_env(new_project()), host=None, context="vm-slow")
    try:
        cold = ok_json(run(lab, "up", "--json", env=env))  # the development profile: the UIs too, through ssh
        assert [(s["name"], s["ready"]) for s in cold["services"]] == [
            ("postgres", True),
            ("redis", True),
            ("adminer", True),
            ("redis-commander", True),
        ]
        assert cold["engine"]["rtt_ms"] >= 45, cold["engine"]
        warm = ok_json(run(lab, "up", "--json", env=env))
        assert {s["action"] for s in warm["services"]} == {"keep"}
        ok_json(run(lab, "db", "migrate", *schema_flags, "--json", env=env))
        health = ok_json(run(lab, "health", "--json", env=env))  # the default 2 s per check, grown by the latency
        assert all(c["ok"] for c in health["checks"]), health
        logs = run(lab, "logs", "postgres", "--tail", "5", env=env)
        assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
        down = ok_json(run(lab, "down", "--json", env=env))
        assert len(down["removed"]) == 4
    finally:
        ok_json(run(lab, "reset", "--yes", "--no-snapshot", "--json", env=env))
    _assert_gone(docker_client, env["QBCTL_PROJECT"])


def test_a_port_busy_on_the_engine_host_is_a_conflict_one_busy_on_the_laptop_is_not(lab, remote, docker_client):
    env = remote
    project = env["QBCTL_PROJECT"]
    with socket.create_server(("127.0.0.1", 0)) as busy:  # on the VM (this namespace), not the laptop
        port = busy.getsockname()[1]
        env_busy = {**env, "DATABASE_URL": env["DATABASE_URL"].rsplit(":", 1)[0] + f":{port}/qb_trading_dev"}
        proc = run(lab, "up", "--profile", "production", "--json", env=env_busy)
        no_traceback(proc)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        error = json.loads(proc.stdout)["error"]
        assert error["code"] == "PORT_IN_USE" and error["setting"] == "DATABASE_URL", error
        assert f"port {port} on 127.0.0.1 of enginevm is in use" in error["message"]
    label = {"label": f"io.qbctl.project={project}"}
    assert not docker_client.api.containers(all=True, filters=label)  # nothing created
    assert not docker_client.api.volumes(filters=label).get("Volumes")

    laptop_port = int(env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    listener = lab.listen_in_namespace(laptop_port)  # busy only on the laptop
    try:
        up = ok_json(run(lab, "up", "--profile", "production", "--json", env=env))
        assert all(s["ready"] for s in up["services"])
    finally:
        listener.kill()
        listener.wait()


def test_ssh_failures_are_one_line_exit_3_with_json_intact(lab, docker_client):
    env = lab.env(stack_env(new_project()))
    cases = {
        "ssh://unknownkey": "host key is not known",
        "ssh://stranger": "login was refused",
        "ssh://root@nosuch.invalid": "unknown host",
    }
    for host, words in cases.items():
        for args in (("status", "--json"), ("up", "--json"), ("health", "--json"), ("db", "migrate", "--json")):
            proc = run(lab, *args, env={**env, "DOCKER_HOST": host}, timeout=60)
            no_traceback(proc)
            assert proc.returncode == 3, (host, args, proc.stdout, proc.stderr)
            error = json.loads(proc.stdout)["error"]
            assert error["code"] == "SSH_FAILED" and words in error["message"], (host, args, error)
        human = run(lab, "status", env={**env, "DOCKER_HOST": host}, timeout=60)
        lines = [ln for ln in human.stderr.splitlines() if ln.startswith("error:")]
        assert human.returncode == 3 and len(lines) == 1 and words in lines[0], human.stderr


def test_two_users_of_one_engine_take_turns(lab, remote, docker_client):
    """Two laptops (two runs from the namespace) on one project of one remote engine: serialised by the
    lock on the engine, the second told who holds it."""
    env = remote
    results: dict[str, subprocess.CompletedProcess] = {}

    def go(name: str, delay: float) -> None:
        time.sleep(delay)
        json_flag = ["--json"] if name == "first" else []  # the second shows its progress: the lock's holder
        results[name] = run(lab, "up", "--profile", "production", *json_flag, env=env)

    threads = [threading.Thread(target=go, args=("first", 0)), threading.Thread(target=go, args=("second", 1.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = ok_json(results["first"]), results["second"]
    assert {s["action"] for s in first["services"]} == {"create"}
    no_traceback(second)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = [line.split() for line in second.stdout.splitlines() if line.startswith(("postgres", "redis"))]
    assert [r[1] for r in rows] == ["keep", "keep"], second.stdout  # it waited, then found the stack made
    assert "is locked by root@" in second.stderr and " since " in second.stderr, second.stderr
    assert not docker_client.api.containers(all=True, filters={"label": f"io.qbctl.lock={env['QBCTL_PROJECT']}"})


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_the_ssh_connection_ends_with_qbctl_however_it_ends(lab, remote, how):
    """Ctrl-C: qbctl closes its tunnel and says so (exit 130). SIGKILL: the watchdog ends ssh and removes
    its folder, although qbctl could do nothing."""
    import signal

    tmp = lab.dir / "tmp"
    env = {**remote, "QBCTL_PROFILE": "production", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        lab.wrap([sys.executable, "-m", "qbctl", "up", "--timeout", "60"]),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not list(tmp.glob("qbctl-ssh-*/docker.sock")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    folders = list(tmp.glob("qbctl-ssh-*"))
    time.sleep(0.5)  # in the middle of up
    proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    if how == "ctrl-c":
        assert proc.returncode == 130 and "interrupted" in err, err
        assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while any(f.exists() for f in folders) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(f.exists() for f in folders), "the tunnel's folder outlived qbctl"

    def left() -> list:  # the watchdog removes the folder last: its `rm` and shell may still be ending
        return [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).count(str(folders[0]))]

    while left() and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    assert not left(), [_cmdline(p) for p in left()]


def _cmdline(p) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
