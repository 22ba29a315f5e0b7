"""The README's own commands, run as written in a throwaway backend checkout, so the README cannot drift
from what works: the "Install" and "Quickstart" blocks, one after the other (install, config show, up,
migrate, seed, status, down) and the GitHub Actions
recipe (install from the path, ci setup, `pytest -n auto` on the plugin's fixtures with the URLs from
GITHUB_ENV, in a repository with no pytest settings, ci teardown). Where the stand-in has no TimescaleDB (a
new machine: it is not packaged), `db migrate` and `ci setup` take `--without-timescaledb`, the README's way
to the plain schema, and pytest the plugin's `--qb-without-timescaledb`; the rest runs as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, stack_env

pytestmark = pytest.mark.docker
README = ROOT / "README.md"


def readme_block(heading: str, lang: str) -> str:
    section = README.read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def runner_env(repo: Path, venv_bin: Path) -> dict[str, str]:
    """What a CI runner or a newcomer's shell has: the venv's python and pip first on PATH, no qbctl
    settings but the test's ports and stand-in images (the environment wins over defaults, as
    documented), and no project name: it must come from the checkout's folder."""
    project = stack_env(repo.name)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL", "GITHUB_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        {
            k: v
            for k, v in project.items()
            if (k.startswith("QBCTL_") and k != "QBCTL_PROJECT") or k in ("DATABASE_URL", "REDIS_URL")
        }
    )
    env["PATH"] = f"{venv_bin}{os.pathsep}{os.environ['PATH']}"
    return env


def run(line: str, repo: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", line], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
    )


def labelled(docker_client, project: str) -> set[str]:
    return {
        c.labels["io.qbctl.service"]
        for c in docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={project}"})
    }


def on_this_machine(line: str, schema_flags: tuple[str, ...]) -> str:
    """A README line as it runs here: the commands that migrate take `--without-timescaledb` where the
    stand-in has no TimescaleDB, and the backend's pytest the plugin's `--qb-without-timescaledb`."""
    if line in ("qbctl db migrate", "qbctl ci setup"):
        return " ".join((line, *schema_flags))
    if line.startswith("pytest") and schema_flags:
        return f"{line} --qb-without-timescaledb"
    return line


def test_install_and_quickstart_run_as_written(backend_repo, fresh_venv, docker_client, schema_flags):
    blocks = readme_block("## Install", "sh") + readme_block("## Quickstart", "sh")
    lines = [re.sub(r"\s+#.*$", "", raw).strip() for raw in blocks.splitlines()]
    lines = [line for line in lines if line]
    assert lines[0] == "pip install ./tools/qbctl" and "qbctl up" in lines and lines[-1] == "qbctl down"
    assert "qbctl db migrate" in lines
    env = runner_env(backend_repo, fresh_venv)
    outputs = {}
    for line in lines:
        proc = run(on_this_machine(line, schema_flags), backend_repo, env)
        assert proc.returncode == 0, f"{line}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        outputs[line] = proc
        if line == "qbctl up":
            assert labelled(docker_client, backend_repo.name) == {"postgres", "redis", "adminer", "redis-commander"}
    assert backend_repo.name in outputs["qbctl config show"].stdout  # the project it found: the checkout
    up = outputs["qbctl up"].stdout
    assert f"stack {backend_repo.name} ready" in up and "?pgsql=postgres&username=qb_user&db=qb_trading_dev" in up
    assert "qbctl db migrate" in up  # what to run next
    assert "applied" in outputs["qbctl db migrate"].stdout
    assert "market_data" in outputs["qbctl db seed"].stdout
    status = outputs["qbctl status"].stdout
    assert "running" in status and f"project {backend_repo.name}: the folder {backend_repo}" in status
    assert labelled(docker_client, backend_repo.name) == set()  # qbctl down removed the containers
    assert len(docker_client.volumes.list(filters={"label": f"io.qbctl.project={backend_repo.name}"})) == 2


def test_the_ci_recipe_runs_as_written(backend_repo, fresh_venv, docker_client, schema_flags):
    job = yaml.safe_load(readme_block("## CI (GitHub Actions)", "yaml"))["jobs"]["test"]
    steps = [s for s in job["steps"] if "run" in s]
    assert [s["run"] for s in steps] == [
        "pip install ./tools/qbctl",
        "pip install -r requirements.txt",
        "qbctl ci setup",
        "pytest -n auto",
        "qbctl ci teardown",
    ]
    github_env = backend_repo.parent / "github_env"
    github_env.write_text("")
    env = {**runner_env(backend_repo, fresh_venv), "GITHUB_ENV": str(github_env), "CI": "true"}
    failed = False
    results = []
    for step in steps:  # as the runner does: a failed step skips the rest but the `if: always()` ones
        if failed and step.get("if") != "always()":
            continue
        exported = dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
        proc = run(on_this_machine(step["run"], schema_flags), backend_repo, {**env, **exported})
        results.append((step["run"], proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
        failed = failed or proc.returncode != 0
        if step["run"] == "qbctl ci setup" and proc.returncode == 0:
            assert labelled(docker_client, backend_repo.name) == {"postgres", "redis"}  # named after the checkout
    assert [(r[0], r[1]) for r in results] == [(s["run"], 0) for s in steps], results
    exported = dict(line.split("=", 1) for line in github_env.read_text().splitlines())
    assert exported == {"DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"]}
    # The backend's tests (and not tools/qbctl's), each with a database of its own on the stack's server.
    assert "2 passed" in results[3][2] and "qbctl: template qbctl_tpl_" in results[3][2], results[3][2]
    assert labelled(docker_client, backend_repo.name) == set()  # ci teardown removed everything
    assert docker_client.volumes.list(filters={"label": f"io.qbctl.project={backend_repo.name}"}) == []


def test_outside_a_project_nothing_is_started(backend_repo, fresh_venv, docker_client, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    (scratch / ".git").mkdir()
    env = {k: v for k, v in runner_env(backend_repo, fresh_venv).items() if k != "PATH"}
    env["PATH"] = os.environ["PATH"]
    from tests.helpers import qbctl

    for args in (["up"], ["ci", "setup"], ["down"], ["reset", "--yes"], ["ci", "teardown"]):
        proc = qbctl(*args, "--json", env=env, cwd=scratch)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        error = json.loads(proc.stdout)["error"]
        assert error["code"] == "NOT_A_PROJECT" and "--project-dir DIR or --project NAME" in error["message"]
        human = qbctl(*args, env=env, cwd=scratch)
        assert human.stderr.count("\n") == 1 and human.stderr.startswith(f"error: {scratch} is no qbctl project")
    assert labelled(docker_client, scratch.name) == set()
    status = qbctl("status", env=env, cwd=scratch)
    assert (
        status.returncode == 1
        and f"note: reading project {scratch.name}: the folder {scratch}, which is no project" in status.stderr
    )
    named = qbctl("--project-dir", str(backend_repo), "config", "show", "--json", env=env, cwd=scratch)
    assert json.loads(named.stdout)["project"] == backend_repo.name
