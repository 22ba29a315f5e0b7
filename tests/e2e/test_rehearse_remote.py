"""db migrate --rehearse with the stack on a "VM" behind ssh (tests/sshlab.py): the copy is made on the
laptop's own engine (QBCTL_REHEARSE_DOCKER_HOST), never on the VM. The laptop runs in a network namespace of
its own, where the engine's socket is hidden; its "own engine" is this machine's, offered to it over tcp on
the lab's address by a relay that counts what goes through it. Both engines are the same daemon here, so
what was created where is told by the connection that asked for it: the relay sees every container the
laptop creates, the engine's events every container of the project."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests import sshlab
from tests.e2e.test_rehearse import pg, scratch_containers, state
from tests.helpers import ROOT, missing, new_project, no_traceback, stack_env

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def lab(docker_client):
    why = sshlab.available()
    if why:
        missing(f"the ssh lab: {why}")
    lab = sshlab.Lab(delay=0.025).start()
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def own_engine(lab):
    relay = sshlab.EngineRelay(lab.host_ip)
    yield relay
    relay.close()


def run(lab, *args: str, env: dict, cwd, apart: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        lab.wrap([sys.executable, "-m", "qbctl", *args], apart=apart),
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def vm(lab, own_engine, docker_client, tmp_path_factory, schema_flags):
    """A stack on the VM through DOCKER_HOST=ssh://enginevm, migrated and seeded (12 days: its old chunks
    compressed by seed), with a project folder of its own (sql/ copied, a test adds a file)."""
    env = lab.env(stack_env(new_project()), host="ssh://enginevm")
    env["QBCTL_REHEARSE_DOCKER_HOST"] = own_engine.url
    cwd = tmp_path_factory.mktemp("rehearse-remote")
    shutil.copytree(ROOT / "sql", cwd / "sql")
    try:
        for step in (
            ("up", "postgres"),
            ("db", "migrate", *schema_flags),
            ("db", "seed", "--symbols", "3", "--days", "12", "--no-redis"),
        ):
            proc = run(lab, *step, env=env, cwd=cwd)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        yield env, cwd
    finally:
        run(lab, "reset", "--yes", "--no-snapshot", env=env, cwd=cwd)
        label = {"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}
        assert not docker_client.api.containers(all=True, filters=label)


@pytest.fixture
def migration(vm):
    env, cwd = vm
    path = cwd / "sql" / "schema" / "0090_rehearsed.sql"
    yield path.write_text
    path.unlink(missing_ok=True)


def containers_created(client, project: str, since: float) -> list[str]:
    """Names of this project's containers the engine created since `since` (its events)."""
    events = client.api.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"io.qbctl.project={project}"},
    )
    return [e["Actor"]["Attributes"]["name"] for e in events]


def left(env) -> dict:
    """What a rehearsal must not leave: a scratch container, a session of a copy on the live server."""
    with pg(env) as conn:
        sessions = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'qbctl-rehearse-%'"
        ).fetchone()[0]
    return {"containers": [c.name for c in scratch_containers(env)], "sessions": sessions}


def test_a_passing_rehearsal_through_ssh_copies_onto_the_laptops_engine(
    lab, own_engine, vm, migration, docker_client, schema_flags, standin_timescaledb
):
    env, cwd = vm
    project = env["QBCTL_PROJECT"]
    migration(
        "ALTER TABLE market_data ADD COLUMN note text;\n"
        "UPDATE market_data SET note = 'old' WHERE time < now() - interval '9 days';\n"
        "CREATE INDEX orders_created_idx ON orders (created_at);\n"
    )
    before = state(env)
    if standin_timescaledb:
        assert any(compressed for _, compressed in before["chunks"])
    since, sent, asked = time.time(), own_engine.sent, len(own_engine.requests)
    proc = run(lab, "db", "migrate", "--rehearse", "--json", *schema_flags, env=env, cwd=cwd)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    c = out["copy"]
    assert c["engine"] == own_engine.url and c["source_host"] == "enginevm"
    assert c["where"].startswith(f"container {project}-postgres-rehearse on your engine at {own_engine.url}, port ")
    assert "streamed from enginevm" in c["method"]
    assert c["tunnel_bytes"] >= c["source_bytes"] > 0  # the whole cluster came through the ssh tunnel
    assert own_engine.sent - sent >= c["tunnel_bytes"]  # and went into the laptop's engine
    (f,) = out["files"]
    assert f["ok"] and [s["line"] for s in f["statements"]] == [1, 2, 3]
    assert {lk["table"]: lk["mode"] for lk in f["locks"]}["market_data"] == "AccessExclusiveLock"
    if standin_timescaledb:
        assert f["batches_decompressed"]["market_data"] > 0
    # The one container made was the copy, and the laptop asked for it: nothing was created on the VM.
    creates = [r for r in own_engine.requests[asked:] if "/containers/create" in r]
    assert len(creates) == 1 and f"name={project}-postgres-rehearse" in creates[0], creates
    assert containers_created(docker_client, project, since) == [f"{project}-postgres-rehearse"]
    assert out["dropped"] is True and left(env) == {"containers": [], "sessions": 0}
    assert state(env) == before

    human = run(lab, "db", "migrate", "--rehearse", *schema_flags, env=env, cwd=cwd)
    assert human.returncode == 0, human.stdout + human.stderr
    text = " ".join(human.stdout.split())
    assert f"on your engine at {own_engine.url}" in text, text
    assert "came through the tunnel from enginevm, where nothing was built" in text
    assert "the copy was removed" in text
    assert state(env) == before and left(env) == {"containers": [], "sessions": 0}


def test_a_failing_rehearsal_through_ssh_exits_1_and_leaves_nothing(lab, vm, migration, schema_flags):
    env, cwd = vm
    migration("ALTER TABLE orders ADD COLUMN audited_by text;\nALTER TABLE orders ADD COLUMN reviewer int NOT NULL;\n")
    before = state(env)
    proc = run(lab, "db", "migrate", "--rehearse", "--json", *schema_flags, env=env, cwd=cwd)
    no_traceback(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["error"]["code"] == "REHEARSAL_FAILED"
    assert out["error"]["message"].startswith("sql/schema/0090_rehearsed.sql:2: 23502"), out["error"]
    assert out["copy"]["source_host"] == "enginevm" and out["dropped"] is True
    assert state(env) == before and left(env) == {"containers": [], "sessions": 0}


def test_the_laptops_default_engine_is_its_local_socket(lab, vm, migration, schema_flags):
    """A laptop that is also where the engine's socket is (the lab without its namespace): the default
    QBCTL_REHEARSE_DOCKER_HOST, unix:///var/run/docker.sock, the copy's port on 127.0.0.1."""
    env, cwd = vm
    env = {k: v for k, v in env.items() if k != "QBCTL_REHEARSE_DOCKER_HOST"}
    migration("ALTER TABLE orders ADD COLUMN audited_by text;\n")
    before = state(env)
    proc = run(lab, "db", "migrate", "--rehearse", "--json", *schema_flags, env=env, cwd=cwd, apart=False)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = json.loads(proc.stdout)["copy"]
    assert c["engine"] == "unix:///var/run/docker.sock" and c["source_host"] == "enginevm"
    assert "on this machine's engine (unix:///var/run/docker.sock)" in c["where"]
    assert state(env) == before and left(env) == {"containers": [], "sessions": 0}


def test_ctrl_c_while_the_copy_comes_through_ssh_leaves_nothing_on_either_side(lab, vm, migration, schema_flags):
    env, cwd = vm
    migration("ALTER TABLE orders ADD COLUMN audited_by text;\n")
    before = state(env)
    proc = subprocess.Popen(
        lab.wrap([sys.executable, "-m", "qbctl", "db", "migrate", "--rehearse", *schema_flags]),
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not scratch_containers(env):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no copy was ever started"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted: the copy was dropped; the database was not touched" in err
    assert "Traceback" not in err
    deadline = time.monotonic() + 10  # the walsender ends a moment after its session is terminated
    while left(env)["sessions"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left(env) == {"containers": [], "sessions": 0}
    assert state(env) == before


def test_what_is_refused_over_ssh_is_one_line(lab, vm, schema_flags, migration):
    env, cwd = vm
    migration("ALTER TABLE orders ADD COLUMN audited_by text;\n")
    proc = run(lab, "db", "migrate", "--rehearse", "--logical", *schema_flags, env=env, cwd=cwd)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert (
        "error: --logical builds its copy as a database of the live server, and that server is on enginevm"
        in proc.stderr
    )
    no_traceback(proc)
    proc = run(
        lab,
        "db",
        "migrate",
        "--rehearse",
        "--json",
        *schema_flags,
        cwd=cwd,
        env={**env, "QBCTL_REHEARSE_DOCKER_HOST": "ssh://enginevm"},
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "REHEARSAL_UNAVAILABLE" and "never built there" in err["message"]
    assert left(env) == {"containers": [], "sessions": 0}
