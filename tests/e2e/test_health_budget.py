"""health and budget on the real stack: green, a stopped Redis, an OOM kill, overruns."""

from __future__ import annotations

import json
import time

import pytest
import redis

from tests.helpers import no_traceback, qbctl

pytestmark = pytest.mark.docker


def _redis(env):
    return redis.Redis.from_url(env["REDIS_URL"].replace("localhost", "127.0.0.1"))


def test_health_is_green_on_a_running_stack(running_stack, schema_flags):
    env, cwd, _ = running_stack
    unmigrated = qbctl("health", "--json", env=env, cwd=cwd)  # the schema qbctl ships is not applied yet
    assert unmigrated.returncode == 1 and json.loads(unmigrated.stdout)["error"]["message"] == "unhealthy: migrations"
    assert qbctl("db", "migrate", *schema_flags, env=env, cwd=cwd).returncode == 0
    proc = qbctl("health", "--json", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    for name in (
        "docker",
        "postgres container",
        "redis container",
        "postgres",
        "redis",
        "redis config",
        "adminer",
        "redis-commander",
    ):
        assert checks[name]["ok"], checks[name]
    human = qbctl("health", env=env, cwd=cwd)
    assert human.returncode == 0 and "healthy" in human.stdout


def test_budget_fits_on_the_default_stack_and_measures_it(running_stack):
    env, cwd, _ = running_stack
    proc = qbctl("budget", "--json", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout
    result = json.loads(proc.stdout)
    items = {i["name"]: i for i in result["items"]}
    assert result["budget_mb"] == 1024
    assert set(items) >= {"postgres", "redis", "backend", "os", "headroom", "adminer", "redis-commander"}
    assert items["postgres"]["measured_mb"] > 0 and items["redis"]["measured_mb"] > 0
    assert items["adminer"]["production"] is False
    human = qbctl("budget", env=env, cwd=cwd)
    assert "fits in 1024MB" in human.stdout and "shared_buffers 128" in human.stdout


def _items(proc) -> dict:
    return {i["name"]: i for i in json.loads(proc.stdout)["items"]}


@pytest.mark.usefixtures("needs_standin_timescaledb")  # a server without it has no TimescaleDB workers to count
def test_budget_judges_the_settings_up_or_down_and_names_what_runs_otherwise(project_env, tmp_path):
    env = project_env
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    up = qbctl("budget", "--json", env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stdout
    same = _items(up)
    for name in ("postgres", "redis"):  # what runs is what the settings say
        assert same[name]["differences"] == [] and same[name]["running_mb"] == same[name]["configured_mb"]
    assert "from the running server, what they do not decide" in same["postgres"]["derivation"]

    # The settings say 900MB; the running Redis has 100MB. The settings are judged, and the difference named.
    over = {**env, "REDIS_MAX_MEMORY": "900MB"}
    proc = qbctl("budget", "--json", env=over, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    result = json.loads(proc.stdout)
    rd = _items(proc)["redis"]
    assert result["error"]["code"] == "BUDGET_EXCEEDED" and rd["ok"] is False and rd["configured_mb"] > 1000
    assert rd["running_mb"] == same["redis"]["configured_mb"]
    assert [d["text"] for d in rd["differences"]] == [
        "running: maxmemory 100MB; settings: 900MB, applied by the next `qbctl up`"
    ]
    assert rd["differences"][0]["setting"] == "REDIS_MAX_MEMORY" and rd["differences"][0]["applied_by_up"] is True
    human = qbctl("budget", env=over, cwd=tmp_path)
    assert human.returncode == 1
    assert "redis: running: maxmemory 100MB; settings: 900MB, applied by the next `qbctl up`" in human.stdout
    assert "does NOT fit in 1024MB" in human.stdout and "REDIS_MAX_MEMORY=105MB" in human.stderr
    no_traceback(human)
    health = {c["name"]: c for c in json.loads(qbctl("health", "--json", env=over, cwd=tmp_path).stdout)["checks"]}
    assert health["redis config"]["detail"].endswith("settings say 900MB, allkeys-lru: `qbctl up` recreates it")
    work_mem = qbctl("budget", "--json", env={**env, "POSTGRES_WORK_MEM": "8MB"}, cwd=tmp_path)
    assert [d["text"] for d in _items(work_mem)["postgres"]["differences"]] == [
        "running: work_mem 4MB; settings: 8MB, applied by the next `qbctl up`"
    ]

    # A larger share: the running container's own limit, in budget and in status.
    share = {**env, "QBCTL_BUDGET_REDIS": "200MB"}
    assert [d["text"] for d in _items(qbctl("budget", "--json", env=share, cwd=tmp_path))["redis"]["differences"]] == [
        "running: memory limit 150MB; settings: 200MB, applied by the next `qbctl up`"
    ]
    status = json.loads(qbctl("status", "--json", env=share, cwd=tmp_path).stdout)
    assert {s["name"]: s["memory_limit_bytes"] for s in status["services"]}["redis"] == 150 * 2**20
    assert status["notes"] == [
        "redis runs with a 150MB memory limit; QBCTL_BUDGET_REDIS says 200MB, applied by the next `qbctl up`"
    ]

    # Changed at runtime: `up` keeps the container, so it is not said to apply the settings.
    _redis(env).config_set("maxmemory", "900mb")
    runtime = qbctl("budget", "--json", env=env, cwd=tmp_path)
    assert runtime.returncode == 0, runtime.stdout  # the settings fit
    (d,) = _items(runtime)["redis"]["differences"]
    assert d["applied_by_up"] is False and "CONFIG SET" in d["text"] and "keeps the container" in d["text"]
    assert any("redis as it runs now" in n and "does not fit" in n for n in json.loads(runtime.stdout)["notes"])
    health = {c["name"]: c for c in json.loads(qbctl("health", "--json", env=env, cwd=tmp_path).stdout)["checks"]}
    assert not health["redis config"]["ok"] and "changed at runtime (CONFIG SET)" in health["redis config"]["detail"]
    _redis(env).config_set("maxmemory", "100mb")

    # Down: the same configuration, the same prediction (within 1%), from the settings alone.
    assert qbctl("down", env=env, cwd=tmp_path).returncode == 0
    down = _items(qbctl("budget", "--json", env=env, cwd=tmp_path))
    for name in ("postgres", "redis"):
        a, b = same[name]["configured_mb"], down[name]["configured_mb"]
        assert abs(a - b) / a < 0.01, (name, a, b)
        assert down[name]["running_mb"] is None and down[name]["differences"] == []
    stopped = qbctl("budget", "--json", env=over, cwd=tmp_path)
    assert stopped.returncode == 1 and _items(stopped)["redis"]["configured_mb"] == rd["configured_mb"]


def test_a_redis_family_past_its_share_is_named(project_env, tmp_path):
    env = project_env
    assert qbctl("up", "redis", env=env, cwd=tmp_path).returncode == 0
    r = _redis(env)
    blob = b"x" * 100_000
    pipe = r.pipeline()
    for i in range(300):  # ~30MB of indicators, over their 20MB share of maxmemory 100MB
        pipe.set(f"indicators:{i:06d}", blob)
    pipe.execute()
    proc = qbctl("budget", "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["error"]["code"] == "BUDGET_EXCEEDED" and "indicators" in result["error"]["message"]
    fam = {f["name"]: f for f in result["redis_families"]}
    assert fam["indicators"]["ok"] is False and fam["indicators"]["measured_mb"] > 20


def test_stopped_redis_fails_health_quickly_and_names_it(project_env, tmp_path, docker_client, schema_flags):
    env = project_env
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    assert qbctl("db", "migrate", *schema_flags, env=env, cwd=tmp_path).returncode == 0
    (c,) = docker_client.containers.list(
        filters={"label": [f"io.qbctl.project={env['QBCTL_PROJECT']}", "io.qbctl.service=redis"]}
    )
    c.stop(timeout=5)
    started = time.monotonic()
    proc = qbctl("health", "--json", env=env, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1 and elapsed < 5
    result = json.loads(proc.stdout)
    failed = {c["name"] for c in result["checks"] if not c["ok"]}
    assert {"redis", "redis container"} <= failed and "redis" in result["error"]["message"]
    human = qbctl("health", env=env, cwd=tmp_path)
    assert "error: unhealthy: redis container, redis" in human.stderr
    no_traceback(human)


def test_a_container_killed_by_its_memory_limit_is_reported_as_oom(project_env, tmp_path):
    # A 24MB container with a 500MB maxmemory: filling Redis makes the kernel kill it.
    env = {**project_env, "QBCTL_BUDGET_REDIS": "24MB", "REDIS_MAX_MEMORY": "500MB"}
    assert qbctl("up", "redis", env=env, cwd=tmp_path).returncode == 0
    r = _redis(env)
    try:
        for i in range(80):
            r.set(f"cache:{i}", b"y" * 1_000_000)
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # killed mid-write, as intended
    time.sleep(1)
    proc = qbctl("health", "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["redis container"]["data"]["oom_killed"] is True
    assert "OOM" in checks["redis container"]["detail"]
    budget = qbctl("budget", "--json", env=env, cwd=tmp_path)
    assert budget.returncode == 1 and "REDIS_MAX_MEMORY" in json.loads(budget.stdout)["error"]["hint"]


def test_budget_configured_side_needs_no_stack(tmp_path):
    from tests.helpers import new_project, stack_env

    env = {**stack_env(new_project()), "POSTGRES_MAX_CONNECTIONS": "100"}
    proc = qbctl("budget", "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert "POSTGRES_MAX_CONNECTIONS=11" in result["error"]["hint"]
    assert any("has none running" in n for n in result["not_measured"])
    over = qbctl("budget", env={**env, "POSTGRES_MAX_CONNECTIONS": "20", "REDIS_MAX_MEMORY": "900MB"}, cwd=tmp_path)
    assert over.returncode == 1 and "REDIS_MAX_MEMORY=105MB" in over.stderr


def test_health_against_an_external_database_says_not_managed(project_env, tmp_path):
    env = {**project_env, "DATABASE_URL": "postgresql://qb_user:pw@db.staging.invalid:5432/qb"}
    assert qbctl("up", "redis", env=env, cwd=tmp_path).returncode == 0
    proc = qbctl("health", "--json", env=env, cwd=tmp_path)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["postgres container"]["ok"] and "not managed" in checks["postgres container"]["detail"]
    assert "db.staging.invalid" in checks["postgres container"]["detail"]
    assert checks["redis"]["ok"] and checks["redis container"]["ok"]
    assert not checks["postgres"]["ok"]  # the database itself is still checked: unreachable here
    assert proc.returncode == 1
    status = qbctl("status", env=env, cwd=tmp_path)
    assert "postgres: external (DATABASE_URL points to db.staging.invalid" in status.stdout
