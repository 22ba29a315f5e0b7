"""up / down / reset / status / logs on a real Docker engine with the stand-in images."""

from __future__ import annotations

import json
import time
import urllib.request

import psycopg
import pytest
import redis

from tests.helpers import PASSWORD, new_project, no_traceback, qbctl, remove_stack, stack_env, standin

pytestmark = pytest.mark.docker


def _pg(env):
    return psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True)


def _redis(env):
    return redis.Redis.from_url(env["REDIS_URL"].replace("localhost", "127.0.0.1"))


def test_up_starts_all_four_ready_and_configured(running_stack, docker_client):
    env, _, proc = running_stack
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert [s["name"] for s in result["services"]] == ["postgres", "redis", "adminer", "redis-commander"]
    assert all(s["ready"] and s["action"] == "create" for s in result["services"])
    with _pg(env) as conn:
        assert conn.execute("SHOW shared_buffers").fetchone()[0] == "128MB"
        assert conn.execute("SHOW work_mem").fetchone()[0] == "4MB"
        assert conn.execute("SHOW max_connections").fetchone()[0] == "10"
    r = _redis(env)
    assert r.config_get("maxmemory")["maxmemory"] == str(100 * 1024 * 1024)
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    for key in ("QBCTL_ADMINER_PORT", "QBCTL_REDIS_COMMANDER_PORT"):
        with urllib.request.urlopen(f"http://127.0.0.1:{env[key]}/", timeout=5) as resp:
            assert resp.status == 200
    project = env["QBCTL_PROJECT"]
    containers = docker_client.containers.list(filters={"label": f"io.qbctl.project={project}"})
    assert len(containers) == 4
    for c in containers:
        bindings = [b for binds in c.attrs["HostConfig"]["PortBindings"].values() for b in binds]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
        assert c.attrs["HostConfig"]["Memory"] > 0
        assert c.labels["io.qbctl.service"] in ("postgres", "redis", "adminer", "redis-commander")
    limits = {c.labels["io.qbctl.service"]: c.attrs["HostConfig"]["Memory"] // 2**20 for c in containers}
    assert limits["postgres"] == 300 and limits["redis"] == 150


def test_second_up_keeps_the_same_containers(running_stack, docker_client):
    env, cwd, _ = running_stack
    project = env["QBCTL_PROJECT"]
    before = {c.name: c.id for c in docker_client.containers.list(filters={"label": f"io.qbctl.project={project}"})}
    proc = qbctl("up", "--json", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {s["action"] for s in result["services"]} == {"keep"}
    after = {c.name: c.id for c in docker_client.containers.list(filters={"label": f"io.qbctl.project={project}"})}
    assert after == before


def test_status_lists_every_service(running_stack):
    env, cwd, _ = running_stack
    proc = qbctl("status", "--json", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    rows = {s["name"]: s for s in json.loads(proc.stdout)["services"]}
    assert set(rows) == {"postgres", "redis", "adminer", "redis-commander"}
    assert all(r["state"] == "running" for r in rows.values())
    assert rows["postgres"]["memory_bytes"] > 0
    assert rows["postgres"]["ports"] == [f"127.0.0.1:{env['DATABASE_URL'].rsplit(':', 1)[1].split('/')[0]}"]
    human = qbctl("status", env=env, cwd=cwd)
    assert "postgres" in human.stdout and "running" in human.stdout


def test_logs_prints_the_service_log(running_stack):
    env, cwd, _ = running_stack
    proc = qbctl("logs", "postgres", "--tail", "50", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "ready to accept connections" in proc.stdout
    unknown = qbctl("logs", "mysql", env=env, cwd=cwd)
    assert unknown.returncode == 2 and "unknown service 'mysql'" in unknown.stderr


def test_a_changed_setting_recreates_only_that_container_and_keeps_its_volume(project_env, tmp_path, docker_client):
    env = project_env
    assert qbctl("up", "postgres", "--json", env=env, cwd=tmp_path).returncode == 0
    with _pg(env) as conn:
        conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    changed = {**env, "POSTGRES_WORK_MEM": "8MB"}
    proc = qbctl("up", "postgres", "--json", env=changed, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (svc,) = json.loads(proc.stdout)["services"]
    assert svc["action"] == "recreate"
    with _pg(env) as conn:
        assert conn.execute("SHOW work_mem").fetchone()[0] == "8MB"
        assert conn.execute("SELECT v FROM kept").fetchone()[0] == 42


def test_data_survives_down_and_up(project_env, tmp_path, docker_client):
    env = project_env
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    with _pg(env) as conn:
        conn.execute("CREATE TABLE candles (symbol text, close numeric)")
        conn.execute("INSERT INTO candles VALUES ('005930', 71200)")
    _redis(env).set("market:005930", "71200")
    down = qbctl("down", "--json", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert len(json.loads(down.stdout)["removed"]) == 2
    project = env["QBCTL_PROJECT"]
    assert docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={project}"}) == []
    assert len(docker_client.volumes.list(filters={"label": f"io.qbctl.project={project}"})) == 2
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    with _pg(env) as conn:
        assert conn.execute("SELECT close FROM candles WHERE symbol = '005930'").fetchone()[0] == 71200
    assert _redis(env).get("market:005930") == b"71200"


def test_reset_removes_only_this_projects_objects(project_env, tmp_path, docker_client):
    env = project_env
    other_env = stack_env(new_project())
    foreign = docker_client.volumes.create(env["QBCTL_PROJECT"] + "-foreign")  # unlabelled
    try:
        assert qbctl("up", "redis", env=env, cwd=tmp_path).returncode == 0
        assert qbctl("up", "redis", env=other_env, cwd=tmp_path).returncode == 0
        no_tty = qbctl("reset", "--json", env=env, cwd=tmp_path)
        assert no_tty.returncode == 4
        assert json.loads(no_tty.stdout)["error"]["code"] == "CONFIRMATION_REQUIRED"
        proc = qbctl("reset", "--yes", "--json", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["volumes_removed"] == [f"{env['QBCTL_PROJECT']}_redisdata"]
        project = env["QBCTL_PROJECT"]
        assert docker_client.volumes.list(filters={"label": f"io.qbctl.project={project}"}) == []
        assert docker_client.volumes.get(foreign.name)  # untouched
        other = docker_client.containers.list(filters={"label": f"io.qbctl.project={other_env['QBCTL_PROJECT']}"})
        assert len(other) == 1 and other[0].status == "running"
    finally:
        foreign.remove(force=True)
        remove_stack(other_env, tmp_path)


def test_a_busy_port_is_reported_before_anything_is_created(project_env, tmp_path, docker_client):
    import socket

    env = project_env
    port = int(env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        proc = qbctl("up", "--json", env=env, cwd=tmp_path)
        human = qbctl("up", env=env, cwd=tmp_path)
    assert proc.returncode == 3
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "PORT_IN_USE" and err["port"] == port and err["setting"] == "REDIS_URL"
    assert "python" in err["message"]  # the holder is named: this test's own process
    assert "REDIS_URL" in human.stderr and human.stderr.startswith("error: port")
    no_traceback(human)
    project = env["QBCTL_PROJECT"]
    assert docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={project}"}) == []


def test_a_container_that_dies_at_start_is_reported_at_once_with_its_logs(project_env, tmp_path):
    # A postgres image run as "redis" exits at once: its entrypoint runs any command but `postgres` as given,
    # and it has no redis-server (the PostgreSQL 17 stand-in, as the real image; the 15 one shares its base
    # with the Redis stand-in).
    env = {**project_env, "QBCTL_REDIS_IMAGE": standin("postgres17")}
    started = time.monotonic()
    proc = qbctl("up", "redis", "--json", "--timeout", "60", env=env, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    (svc,) = result["services"]
    assert svc["ready"] is False and "exited with code" in svc["detail"]
    assert any("redis-server: not found" in line for line in svc["logs"]), svc["logs"]
    assert elapsed < 20, f"took {elapsed:.1f}s: a dead container must not wait for the 60s timeout"
    human = qbctl("up", "redis", "--timeout", "60", env=env, cwd=tmp_path)
    assert "last" in human.stdout and "redis-server: not found" in human.stdout
    assert "error: redis: container exited with code" in human.stderr


def test_a_bad_libpq_value_in_the_url_is_a_settings_error_not_a_wait(project_env, tmp_path):
    env = {**project_env, "DATABASE_URL": project_env["DATABASE_URL"] + "?sslmode=bogus"}
    started = time.monotonic()
    proc = qbctl("up", "postgres", "--json", "--timeout", "60", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and time.monotonic() - started < 20
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "CONFIG_INVALID" and err["message"] == 'DATABASE_URL: invalid sslmode value: "bogus"'
    unknown = qbctl("up", env={**env, "DATABASE_URL": project_env["DATABASE_URL"] + "?ssl=1"}, cwd=tmp_path)
    assert unknown.returncode == 2 and "ssl after ? is not a libpq parameter" in unknown.stderr
    no_traceback(unknown)


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"])
def test_an_unreachable_engine_is_reported_quickly(host, tmp_path):
    env = {**stack_env(new_project()), "DOCKER_HOST": host}
    started = time.monotonic()
    proc = qbctl("up", "--json", env=env, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "DOCKER_UNAVAILABLE" and "DOCKER_HOST" in err["hint"]
    assert elapsed < 2.5
    human = qbctl("status", env=env, cwd=tmp_path)
    assert human.returncode == 3 and human.stderr.startswith("error: cannot reach the Docker engine")
    no_traceback(human)


def test_no_password_in_any_output(running_stack):
    env, cwd, _ = running_stack
    for args in (
        ["up"],
        ["up", "--json"],
        ["status"],
        ["status", "--json"],
        ["config", "show"],
        ["config", "show", "--json"],
        ["logs", "postgres"],
    ):
        proc = qbctl(*args, env=env, cwd=cwd)
        assert PASSWORD not in proc.stdout + proc.stderr, args


def test_db_shell_runs_psql_in_the_container_from_a_pipe(running_stack):
    env, cwd, _ = running_stack
    proc = qbctl("db", "shell", env=env, cwd=cwd, input="SELECT current_user;\n")
    assert proc.returncode == 0, proc.stderr
    assert "qb_user" in proc.stdout


def test_an_image_that_cannot_be_pulled_names_the_setting(project_env, tmp_path, docker_client):
    env = {**project_env, "QBCTL_REDIS_IMAGE": "qbctl-nonexistent/redis:never"}
    proc = qbctl("up", "redis", "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 3
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "IMAGE_UNAVAILABLE" and "qbctl-nonexistent/redis:never" in err["message"]
    assert "QBCTL_REDIS_IMAGE" in err["hint"]
    assert docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"}) == []


def test_a_docker_context_is_honoured(project_env, tmp_path, docker_client):
    import hashlib
    import os

    config = tmp_path / "dockerconfig"
    meta = config / "contexts" / "meta" / hashlib.sha256(b"qbtest").hexdigest()
    meta.mkdir(parents=True)
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    (meta / "meta.json").write_text(
        json.dumps({"Name": "qbtest", "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}})
    )
    (config / "config.json").write_text(json.dumps({"currentContext": "qbtest"}))
    env = {k: v for k, v in project_env.items() if k != "DOCKER_HOST"}
    env["DOCKER_CONFIG"] = str(config)
    assert qbctl("status", "--json", env=env, cwd=tmp_path).returncode in (0, 1)  # reached the engine
    missing = qbctl("status", "--json", env={**env, "DOCKER_CONTEXT": "nosuch"}, cwd=tmp_path)
    assert missing.returncode == 3
    assert json.loads(missing.stdout)["error"]["message"] == "Docker context 'nosuch' does not exist"


def test_logs_follow_streams_until_ctrl_c(running_stack):
    import signal
    import subprocess
    import sys

    from tests.helpers import ROOT

    env, cwd, _ = running_stack
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbctl", "logs", "redis", "--follow", "--tail", "5"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()  # a line arrives while the command keeps running
    assert first and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "Traceback" not in err
