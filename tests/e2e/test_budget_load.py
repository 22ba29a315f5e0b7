"""`qbctl budget --load` and `health` against kills, on the real engine with the stand-in images."""

from __future__ import annotations

import json
import shutil
import threading

import psycopg
import pytest

from tests.helpers import ROOT, no_traceback, qbctl

pytestmark = pytest.mark.docker


def _pg(env):
    return psycopg.connect(env["DATABASE_URL"].replace("localhost", "127.0.0.1"), autocommit=True)


def _service(result: dict, name: str) -> dict:
    return next(i for i in result["items"] if i["name"] == name)


def test_load_needs_seeded_data_then_measures_the_defaults_then_names_a_kill(project_env, tmp_path, schema_flags):
    # Where the stand-in has no TimescaleDB the load runs on the plain schema (its queries without
    # time_bucket/first/last, no compression job): what it measures and judges is the same.
    env = project_env
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    migrated = qbctl("db", "migrate", *schema_flags, env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr

    nothing = qbctl("budget", "--load", "--seconds", "5", env=env, cwd=tmp_path)
    assert nothing.returncode == 1 and "qbctl db seed" in nothing.stderr
    assert len([line for line in nothing.stderr.splitlines() if line.startswith("error:")]) == 1
    no_traceback(nothing)

    assert qbctl("db", "seed", "--symbols", "20", "--days", "10", env=env, cwd=tmp_path).returncode == 0
    proc = qbctl("budget", "--load", "--seconds", "10", "--json", env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    pg, rd = _service(result, "postgres"), _service(result, "redis")
    assert pg["kills"] == [] and rd["kills"] == []
    assert 0 < pg["measured_mb"] <= pg["budget_mb"] and pg["peak_with_cache_mb"] >= pg["measured_mb"]
    assert 0 < rd["measured_mb"] <= rd["budget_mb"] and pg["configured_mb"] > 0
    load = result["load"]
    assert load["sessions"] == 10 - 3  # every connection an ordinary user may open
    assert all(q["count"] > 0 and q["errors"] == 0 for q in load["queries"].values()), load["queries"]
    assert load["redis"]["get"]["count"] > 0 and load["redis"]["get"]["p99_ms"] is not None
    assert load["redis"]["evicted"], "the fill must reach maxmemory and evict"
    with _pg(env) as conn:  # the load's own rows and keys are gone
        assert conn.execute("SELECT count(*) FROM market_data WHERE symbol LIKE 'LOAD%'").fetchone()[0] == 0
    import redis

    r = redis.Redis.from_url(env["REDIS_URL"].replace("localhost", "127.0.0.1"))
    assert list(r.scan_iter(match="cache:qbctl-load:*")) == []
    human = qbctl("budget", "--load", "--seconds", "5", env=env, cwd=tmp_path, timeout=300)
    assert "under load for" in human.stdout and "model error" in human.stdout and "redis GET p50" in human.stdout

    # Settings that the running stack does not have yet: the load measures what runs, and says so; the model's
    # error is against its prediction for what runs; the verdict on the prediction is the settings'.
    lower = {**env, "REDIS_MAX_MEMORY": "90MB"}
    other = qbctl("budget", "--load", "--seconds", "5", "--json", env=lower, cwd=tmp_path, timeout=300)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-2000:]
    measured = json.loads(other.stdout)
    note = measured["load"]["notes"][0]
    assert note.startswith("the load measured the stack as it runs, which is not what the settings say")
    assert "redis: running: maxmemory 100MB; settings: 90MB, applied by the next `qbctl up`" in note
    rd = _service(measured, "redis")
    assert rd["configured_mb"] < rd["running_mb"] == _service(result, "redis")["configured_mb"]
    assert rd["error_pct"] == round((rd["running_mb"] - rd["measured_mb"]) / rd["measured_mb"] * 100, 1)
    assert _service(measured, "postgres")["differences"] == []

    # A budget too small for this load: the kernel kills PostgreSQL backends; the verdict names it.
    small = {**env, "QBCTL_BUDGET_POSTGRES": "120MB", "POSTGRES_MAX_CONNECTIONS": "40"}
    assert qbctl("up", "--no-ui", env=small, cwd=tmp_path).returncode == 0
    over = qbctl("budget", "--load", "--seconds", "15", "--json", env=small, cwd=tmp_path, timeout=300)
    assert over.returncode == 1, over.stdout[-2000:]
    verdict = json.loads(over.stdout)
    assert verdict["error"]["code"] == "BUDGET_EXCEEDED" and "postgres" in verdict["error"]["message"]
    assert _service(verdict, "postgres")["kills"], _service(verdict, "postgres")
    assert "killed" in verdict["error"]["message"]
    assert (
        "POSTGRES_MAX_CONNECTIONS=" in verdict["error"]["hint"] or "QBCTL_BUDGET_POSTGRES=" in verdict["error"]["hint"]
    )
    health = qbctl("health", "--json", env=small, cwd=tmp_path)
    assert health.returncode == 1
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    assert not checks["postgres container"]["ok"] and checks["postgres container"]["data"]["state"] == "running"


def test_health_names_a_backend_the_kernel_killed_while_the_container_runs(
    project_env, tmp_path, docker_client, schema_flags
):
    env = {**project_env, "QBCTL_BUDGET_POSTGRES": "200MB"}
    assert qbctl("up", "--no-ui", env=env, cwd=tmp_path).returncode == 0
    # health wants no pending migration
    assert qbctl("db", "migrate", *schema_flags, env=env, cwd=tmp_path).returncode == 0
    assert qbctl("health", "--json", env=env, cwd=tmp_path).returncode == 0
    failed = []

    def huge_sort():
        try:
            with _pg(env) as conn:  # a sort that wants far more than the container's 200MB
                conn.execute("SET work_mem = '2GB'")
                conn.execute(
                    "SELECT count(*) FROM (SELECT g, md5(g::text) FROM generate_series(1, 20000000) g ORDER BY 2) s"
                )
        except psycopg.Error as exc:
            failed.append(str(exc))

    t = threading.Thread(target=huge_sort)
    t.start()
    t.join(240)
    assert failed, "the sort should have been killed"
    proc = qbctl("health", "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    result = json.loads(proc.stdout)
    check = {c["name"]: c for c in result["checks"]}["postgres container"]
    assert not check["ok"] and check["data"]["state"] == "running"  # the container itself still runs
    assert "killed" in check["detail"] and "postgres" in check["detail"]
    assert "postgres container" in result["error"]["message"]
    human = qbctl("health", env=env, cwd=tmp_path)
    assert "terminated by signal 9" in human.stdout or "out of memory" in human.stdout
    no_traceback(human)
