from __future__ import annotations

import pytest

from tests.helpers import new_project, qbctl, stack_env


@pytest.fixture
def project_env(docker_client, tmp_path):
    """A fresh project with free ports; everything it made is removed afterwards."""
    project = new_project()
    env = stack_env(project)
    yield env
    qbctl("reset", "--yes", "--no-snapshot", env=env, cwd=tmp_path)


@pytest.fixture(scope="module")
def running_stack(docker_client, tmp_path_factory):
    """One stack brought up once for the read-mostly tests of a module."""
    project = new_project()
    env = stack_env(project)
    cwd = tmp_path_factory.mktemp("stack")
    proc = qbctl("up", "--json", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield env, cwd, proc
    qbctl("reset", "--yes", "--no-snapshot", env=env, cwd=cwd)
