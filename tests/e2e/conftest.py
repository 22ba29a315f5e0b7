from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, new_project, qbctl, remove_stack, stack_env


@pytest.fixture
def project_env(docker_client, tmp_path):
    """A fresh project with free ports; everything it made is removed afterwards."""
    project = new_project()
    env = stack_env(project)
    yield env
    remove_stack(env, tmp_path)


@pytest.fixture(scope="module")
def running_stack(docker_client, tmp_path_factory):
    """One stack brought up once for the read-mostly tests of a module. Removed even when `up` failed: a
    fixture that fails before its yield gets no teardown, and an `up` that timed out leaves its containers."""
    project = new_project()
    env = stack_env(project)
    cwd = tmp_path_factory.mktemp("stack")
    try:
        proc = qbctl("up", "--json", env=env, cwd=cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield env, cwd, proc
    finally:
        remove_stack(env, cwd)


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory) -> Path:
    """A new, empty virtual environment (no qbctl, no site packages); its bin folder."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv / "bin"


def repository_files() -> list[str]:
    """qbctl's files as a checkout has them (tracked and new, not ignored), as they are now in this tree."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


# No pytest settings (no testpaths): `pytest` at the root must run the backend's tests and not
# tools/qbctl's (qbctl's own conftest.py sees to that).
BACKEND_PYPROJECT = """\
[project]
name = "qb-backend"
version = "0.1.0"

[tool.qbctl]
"""

BACKEND_TEST = """\
import psycopg
import pytest
import redis


@pytest.mark.parametrize("n", range(2))
def test_each_test_gets_a_migrated_database_and_a_redis_of_its_own(qb_database_url, qb_redis_url, n):
    with psycopg.connect(qb_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM qbctl.migrations").fetchone()[0] == {migrations}
        assert conn.execute(
            "INSERT INTO orders (symbol, side, order_type, quantity, strategy)"
            " VALUES ('005930', 'buy', 'market', 10, 'test') RETURNING id").fetchone()[0] == 1
    r = redis.Redis.from_url(qb_redis_url)
    assert r.dbsize() == 0
    r.set("market:005930", n)
"""


def migrations_applied(timescaledb: bool) -> int:
    """The files a migrate of qbctl's own sql/ applies: all of them with TimescaleDB; without it, the schema
    files but 0001 (which creates the extension), and no policy file."""
    schema, policies = (len(list((ROOT / "sql" / part).glob("*.sql"))) for part in ("schema", "policies"))
    return schema + policies if timescaledb else schema - 1


@pytest.fixture
def backend_repo(tmp_path, docker_client, standin_timescaledb) -> Path:
    """A throwaway checkout of the backend as the README assumes it: its own files at the root (a
    pyproject.toml with [tool.qbctl], requirements.txt, tests/), qbctl at tools/qbctl, no .env, no sql/.
    Its folder is named like a test project, so the project named after it is swept like one. Its test
    expects the QB schema as this machine migrates it (with TimescaleDB where the stand-in carries it)."""
    repo = tmp_path / new_project()
    for name in repository_files():
        target = repo / "tools" / "qbctl" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (repo / "pyproject.toml").write_text(BACKEND_PYPROJECT)
    (repo / "requirements.txt").write_text("pytest\npytest-xdist\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_stack.py").write_text(
        BACKEND_TEST.replace("{migrations}", str(migrations_applied(standin_timescaledb)))
    )
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    yield repo
    # The project is named after the folder. No snapshot: a teardown needs none, and when a snapshot fails
    # (a stack the test left half-made) reset removes nothing.
    remove_stack(stack_env(repo.name), repo)
