"""A wheel in a fresh venv, run from a folder with only .env and sql/: the way CI uses qbctl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from tests.helpers import ROOT, new_project, stack_env

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """qbctl installed from a wheel built from this repository into a new venv; its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = work.glob("qbctl-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv / "bin"


@pytest.fixture
def ci_folder(tmp_path, docker_client):
    """A folder with only .env and sql/, and a clean environment (no PYTHONPATH, no QBCTL_*)."""
    project_env = stack_env(new_project())
    keys = [k for k in project_env if k.startswith("QBCTL_") or k in ("DATABASE_URL", "REDIS_URL")]
    (tmp_path / ".env").write_text("".join(f"{k}={project_env[k]}\n" for k in keys))
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GITHUB_ENV": str(tmp_path / "github_env")}
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    yield tmp_path, env, project_env
    down = subprocess.run(
        [sys.executable, "-m", "qbctl", "ci", "teardown"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **{k: project_env[k] for k in keys}, "PYTHONPATH": str(ROOT)},
    )
    assert down.returncode == 0, down.stdout + down.stderr


def test_installed_qbctl_runs_ci_setup_and_teardown(installed, ci_folder, docker_client):
    folder, env, project_env = ci_folder
    qbctl = str(installed / "qbctl")
    assert "qbctl" in subprocess.run([qbctl, "--version"], capture_output=True, text=True, env=env).stdout
    help_ = subprocess.run([qbctl, "--help"], capture_output=True, text=True, env=env, cwd=folder)
    assert help_.returncode == 0 and "ci" in help_.stdout
    proc = subprocess.run(
        [qbctl, "ci", "setup", "--without-timescaledb", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert [s["step"] for s in result["steps"]] == ["up", "lint", "migrate", "health"]
    assert result["lint"] == []  # the shipped schema, linted before it is migrated
    assert all(s["ok"] for s in result["steps"]) and result["exported"] == ["DATABASE_URL", "REDIS_URL"]
    exported = dict(line.split("=", 1) for line in (folder / "github_env").read_text().splitlines())
    assert exported == {"DATABASE_URL": project_env["DATABASE_URL"], "REDIS_URL": project_env["REDIS_URL"]}
    with psycopg.connect(exported["DATABASE_URL"].replace("localhost", "127.0.0.1")) as conn:
        assert conn.execute("SELECT count(*) FROM market_data").fetchone()[0] == 0
    assert redis.Redis.from_url(exported["REDIS_URL"].replace("localhost", "127.0.0.1")).ping()
    project = project_env["QBCTL_PROJECT"]
    running = {
        c.labels["io.qbctl.service"]
        for c in docker_client.containers.list(filters={"label": f"io.qbctl.project={project}"})
    }
    assert running == {"postgres", "redis"}  # no UIs in CI
    plain = subprocess.run(
        [qbctl, "ci", "setup", "--without-timescaledb"],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=300,
    )
    assert plain.returncode == 0 and "ci setup done" in plain.stdout and "\x1b[" not in plain.stdout
    down = subprocess.run([qbctl, "ci", "teardown", "--json"], capture_output=True, text=True, env=env, cwd=folder)
    assert down.returncode == 0, down.stderr
    assert len(json.loads(down.stdout)["volumes_removed"]) == 2
    assert docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={project}"}) == []


def test_ci_setup_reports_the_failing_step_with_its_exit_code(installed, ci_folder):
    folder, env, _ = ci_folder
    # A policy template naming a setting that does not exist: migrate fails with exit 2 (not 1).
    (folder / "sql" / "policies" / "099_typo.sql").write_text("SELECT {{DATA_RETENTION_DAZE}};\n")
    proc = subprocess.run(
        [str(installed / "qbctl"), "ci", "setup", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert [(s["step"], s["ok"]) for s in result["steps"]] == [("up", True), ("lint", True), ("migrate", False)]
    assert result["error"]["code"] == "CONFIG_INVALID" and "DATA_RETENTION_DAZE" in result["error"]["message"]
    assert not (folder / "github_env").exists()
