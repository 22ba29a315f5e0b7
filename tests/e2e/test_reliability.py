"""Faults, concurrency, upgrades and secrets, on the real engine (issue: reliability and safety)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.helpers import IN_CI, PASSWORD, ROOT, RUN, RUN_LABEL, no_traceback, qbctl, run_once, standin

pytestmark = pytest.mark.docker


def popen(args, env, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "qbctl", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def containers(client, env, all_=True):
    # ignore_removed: docker-py lists, then inspects each; one caught mid-creation can 404 in between.
    return client.containers.list(
        all=all_, filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}, ignore_removed=True
    )


def _pg(env):
    return psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True)


def test_two_ups_at_once_end_with_one_stack(project_env, tmp_path, docker_client):
    env = project_env
    procs = [popen(["up", "--no-ui"], env, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    actions = sorted(
        line.split()[1] for out, _ in outs for line in out.splitlines() if line.split()[:1] in (["postgres"], ["redis"])
    )
    assert actions == ["create", "create", "keep", "keep"]  # one run made the stack, the other found it
    assert len(containers(docker_client, env)) == 2
    assert any("another qbctl is changing project" in err and "waiting for it to finish" in err for _, err in outs)


def test_sigkill_in_the_middle_of_up_leaves_nothing_the_next_up_cannot_finish(project_env, tmp_path, docker_client):
    env = project_env
    proc = popen(["up"], env, tmp_path)
    deadline = time.monotonic() + 60
    while not containers(docker_client, env) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    again = qbctl("up", "--json", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(s["ready"] for s in json.loads(again.stdout)["services"])
    assert len(containers(docker_client, env)) == 4


def test_ctrl_c_stops_waiting_cleanly_and_keeps_everything(project_env, tmp_path, docker_client):
    # The adminer stand-in has no entrypoint: run as "redis" it starts redis-server in protected mode,
    # which refuses every connection through the published port, so it never becomes ready.
    env = {**project_env, "QBCTL_REDIS_IMAGE": standin("adminer")}
    proc = popen(["up", "redis", "--timeout", "120"], env, tmp_path)
    deadline = time.monotonic() + 60
    while not containers(docker_client, env) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and time.monotonic() - started < 5
    assert "interrupted" in err and "Traceback" not in err
    assert len(containers(docker_client, env)) == 1
    assert docker_client.volumes.list(filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"})


def test_a_volume_from_another_postgres_major_is_refused_before_start(project_env, tmp_path, docker_client):
    env = project_env
    assert qbctl("up", "postgres", env=env, cwd=tmp_path).returncode == 0
    assert qbctl("down", env=env, cwd=tmp_path).returncode == 0
    base = docker_client.images.get(standin("postgres"))
    holder = docker_client.containers.create(base.id, "true", labels={RUN_LABEL: RUN})
    # A tag of this project's: runs that share the engine each commit their own (with one tag for all,
    # one run could remove it under another's test).
    pg16 = f"qbctl-standin/postgres:pg16-{env['QBCTL_PROJECT']}"
    try:
        docker_client.api.commit(holder.id, *pg16.split(":"), changes=["ENV PG_MAJOR=16", f"LABEL {RUN_LABEL}={RUN}"])
    finally:
        holder.remove(force=True, v=True)
    newer = {**env, "QBCTL_POSTGRES_IMAGE": pg16}
    try:
        proc = qbctl("up", "postgres", "--json", env=newer, cwd=tmp_path)
    finally:
        docker_client.images.remove(pg16)  # each run commits a new one
    assert proc.returncode == 1, proc.stdout
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "VOLUME_INCOMPATIBLE" and err["volume_pg_major"] == "15"
    assert "holds PostgreSQL 15 data" in err["message"] and "qbctl reset" in err["hint"]
    assert containers(docker_client, env) == []  # nothing was started on the data


def test_a_foreign_data_directory_is_recognised_from_the_servers_log(project_env, tmp_path, docker_client):
    env = project_env
    assert qbctl("up", "postgres", env=env, cwd=tmp_path).returncode == 0
    assert qbctl("down", env=env, cwd=tmp_path).returncode == 0
    volume = f"{env['QBCTL_PROJECT']}_pgdata"
    run_once(
        docker_client,
        standin("postgres"),
        ["sh", "-c", "echo 14 > /data/PG_VERSION"],
        entrypoint=[],
        volumes={volume: {"bind": "/data", "mode": "rw"}},
    )
    proc = qbctl("up", "postgres", "--json", "--timeout", "60", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "VOLUME_INCOMPATIBLE" and "(14)" in err["message"]


def test_redis_published_beyond_loopback_is_warned_about_and_uis_stay_on_loopback(project_env, tmp_path, docker_client):
    env = {**project_env, "QBCTL_BIND_ADDRESS": "0.0.0.0"}
    proc = qbctl("up", "redis-commander", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning: Redis is published on 0.0.0.0 and has no password" in proc.stderr
    binds = {
        c.labels["io.qbctl.service"]: [b["HostIp"] for bs in c.attrs["HostConfig"]["PortBindings"].values() for b in bs]
        for c in containers(docker_client, env)
    }
    assert binds == {"redis": ["0.0.0.0"], "redis-commander": ["127.0.0.1"]}


def test_no_password_in_any_output(project_env, tmp_path):
    env = {**project_env, "REDIS_URL": project_env["REDIS_URL"].replace("redis://", f"redis://:{PASSWORD}@")}
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    (tmp_path / ".env").write_text(f"DATABASE_URL={env['DATABASE_URL']}\n")
    commands = [
        ["up"],
        ["up", "--json"],
        ["status"],
        ["status", "--json"],
        ["budget"],
        ["budget", "--json"],
        ["config", "show"],
        ["config", "show", "--json"],
        ["db", "migrate"],
        ["db", "migrate", "--json"],
        ["db", "migrate", "--without-timescaledb"],
        ["health"],
        ["health", "--json"],
        ["db", "status", "--json"],
        ["db", "seed", "--symbols", "1", "--days", "1"],
        ["logs", "postgres"],
        ["logs", "redis-commander"],
        ["compose", "render", "--check"],
        ["ci", "setup", "--json"],
        ["env", "check"],
    ]
    codes = {}
    for args in commands:
        proc = qbctl(*args, env=env, cwd=tmp_path)
        no_traceback(proc)
        assert PASSWORD not in proc.stdout + proc.stderr, args
        codes[" ".join(args)] = proc.returncode
    # The commands really ran (not stopped at the settings): the stack is up and answering.
    assert codes["up"] == 0 and codes["status"] == 0 and codes["health"] == 0, codes
    (tmp_path / ".env").unlink()
    bad = qbctl("up", env={**env, "DATABASE_URL": f"postgresql://u:{PASSWORD}@/nohost"}, cwd=tmp_path)
    assert bad.returncode == 2 and PASSWORD not in bad.stderr and "u:***@" in bad.stderr
    (tmp_path / ".env").write_text("BROKEN LINE\n")
    broken = qbctl("up", env=env, cwd=tmp_path)
    assert broken.returncode == 2 and "line 1: cannot parse 'BROKEN LINE'" in broken.stderr
    (tmp_path / ".env").unlink()  # the fixture's teardown resets the stack from this folder


def _dockerd():
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    if len(out) != 1 or os.geteuid() != 0:
        return None
    with open(f"/proc/{out[0]}/cmdline", "rb") as f:
        return int(out[0]), [a.decode() for a in f.read().split(b"\0") if a]


def test_the_stack_survives_an_engine_restart(project_env, tmp_path, docker_client, schema_flags):
    if os.environ.get("QBCTL_TEST_SHARED_ENGINE"):  # other test runs use this engine now: a restart breaks them
        pytest.skip("QBCTL_TEST_SHARED_ENGINE is set: this test restarts the Docker engine")
    found = _dockerd()
    if not found:
        if IN_CI:
            pytest.fail("CI needs a local dockerd it may restart")
        pytest.skip("no single local dockerd that this user may restart")
    pid, cmdline = found
    env = project_env
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    # health wants no pending migration
    assert qbctl("db", "migrate", *schema_flags, env=env, cwd=tmp_path).returncode == 0
    with _pg(env) as conn:
        conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('005930')")
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.1)
    subprocess.Popen(cmdline, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    proc = None
    for _ in range(100):
        proc = qbctl("health", "--wait", "--timeout", "30", "--json", env=env, cwd=tmp_path)
        if proc.returncode != 3:
            break
        time.sleep(0.3)
    assert proc.returncode == 0, proc.stdout  # the restart policy brought both back
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    with _pg(env) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone()[0] == "005930"
