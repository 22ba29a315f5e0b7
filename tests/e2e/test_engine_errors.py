"""Engine calls that fail, on the local Docker engine: a start refused by the engine is rolled back,
a container left "created" is made anew, and the engine lock is taken once, by name."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from qbctl.config import settings as S
from qbctl.engine import facade as engine
from qbctl.engine import lock
from qbctl.engine.labels import LABEL_CONFIG, LABEL_LOCK, LABEL_LOCK_EXPIRES, LABEL_SERVICE
from qbctl.errors import QbctlError
from qbctl.stack import spec
from qbctl.transport import target
from qbctl.transport.ssh import Tunnels
from tests.helpers import ROOT, no_traceback, qbctl

pytestmark = pytest.mark.docker


def _settings(env: dict) -> S.Settings:
    return S.load(environ=env, cwd=Path("/nonexistent"))


def test_a_start_the_engine_refuses_leaves_no_half_created_container(project_env, docker_client):
    """The port is taken after the pre-check (a race): the engine's own refusal is PORT_IN_USE naming
    the setting, and the created container is removed again."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        settings = _settings({**project_env, "REDIS_URL": f"redis://localhost:{port}/0"})
        stack = spec.build_stack(settings)
        eng = engine.open_engine(target.resolve(), Tunnels())
        eng.ensure_network(stack)
        eng.ensure_volumes(stack, [stack.get("redis")], {})
        with pytest.raises(QbctlError) as caught:
            eng.create_and_start(stack, stack.get("redis"))
    err = caught.value
    assert err.code == "PORT_IN_USE" and err.exit_code == 3 and err.details["setting"] == "REDIS_URL", err.message
    assert "nothing of it was left behind" in err.message
    assert not docker_client.api.containers(all=True, filters={"name": f"{stack.project}-redis"})


def test_a_created_container_is_recreated_by_the_next_up(project_env, docker_client):
    redis = spec.build_stack(_settings(project_env)).get("redis")
    project = project_env["QBCTL_PROJECT"]
    docker_client.api.create_container(
        redis.image,
        name=f"{project}-redis",
        command=list(redis.command),
        labels={**dict(redis.labels), LABEL_SERVICE: "redis", LABEL_CONFIG: redis.config_hash()},
    )
    proc = qbctl("up", "redis", "--json", env=project_env, cwd=ROOT)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["services"][0]["action"] == "recreate" and "created but never started" in result["plan"]


def test_the_engine_lock_is_taken_once_and_expires(project_env, docker_client, monkeypatch):
    project = project_env["QBCTL_PROJECT"]
    eng = engine.open_engine(target.resolve(), Tunnels())
    first, held = eng.try_lock(project, lock.holder_labels(ttl=60))
    assert first and held == {}
    second, held = eng.try_lock(project, lock.holder_labels(ttl=60))
    assert second is None and held["id"] == first and held[LABEL_LOCK] == project
    assert f"pid {os.getpid()}" in lock.describe(held)
    assert not docker_client.api.containers(filters={"label": f"io.qbctl.project={project}"})  # down leaves it
    eng.unlock(first)
    # A lock whose holder never released it is taken after its expiry.
    stale_id, _ = eng.try_lock(
        project,
        {
            **lock.holder_labels(ttl=60),
            LABEL_LOCK_EXPIRES: str(int(time.time()) - 1),
            "io.qbctl.lock.holder": "ghost@elsewhere pid 1",
        },
    )
    said = []
    with lock.engine_lock(eng, project, said.append):  # any wait would be an event in `said`
        mine = docker_client.api.containers(all=True, filters={"label": f"{LABEL_LOCK}={project}"})
        assert [c["Id"] for c in mine] != [stale_id] and len(mine) == 1
    assert not said
    assert not docker_client.api.containers(all=True, filters={"label": f"{LABEL_LOCK}={project}"})
