"""A warm `up` (stack/warm.py, launch.py) on a real stack: the ordinary path's answer, without the Docker SDK;
anything to do, or anything it cannot tell, goes to the ordinary path; it never starts or changes anything."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from io import StringIO

import pytest

from tests.helpers import ROOT, new_project, no_traceback, qbctl, stack_env

pytestmark = pytest.mark.docker

STEADY = 20  # seconds: the engine's first health check runs 5 s after a start


@pytest.fixture(scope="module")
def warm_stack(docker_client, tmp_path_factory):
    """A stack brought up once, then waited on until the engine calls PostgreSQL and Redis healthy."""
    project = new_project()
    env = stack_env(project)
    cwd = tmp_path_factory.mktemp("warm")
    proc = qbctl("up", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield env, cwd
    qbctl("reset", "--yes", "--no-snapshot", env=env, cwd=cwd)


def _healthy(docker_client, project: str) -> dict:
    """name -> container, once postgres and redis are healthy (their health checks have run)."""
    deadline = time.monotonic() + STEADY
    while True:
        found = {
            c.labels["io.qbctl.service"]: c
            for c in docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={project}"})
        }
        health = {n: (c.attrs["State"].get("Health") or {}).get("Status") for n, c in found.items()}
        if health.get("postgres") == "healthy" and health.get("redis") == "healthy":
            return found
        assert time.monotonic() < deadline, f"not healthy after {STEADY}s: {health}"
        time.sleep(0.5)


@pytest.fixture
def settings_of(monkeypatch):
    """Settings and options as the CLI builds them, from a test stack's environment, in-process."""

    def make(env, cwd):
        from qbctl.config import settings

        for key in [k for k in os.environ if k.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL", "DOCKER_"))]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith(("QBCTL_", "DATABASE_URL", "REDIS_URL", "DOCKER_")):
                monkeypatch.setenv(key, value)
        monkeypatch.chdir(cwd)
        return settings.load(None)

    return make


def _steady(data: dict) -> dict:
    """A result without what differs between two runs: the seconds it took."""
    data = json.loads(json.dumps(data))
    data.pop("timings")
    for s in data["services"]:
        s.pop("seconds")
    return data


def _text(result) -> str:
    from qbctl import views
    from qbctl.output import Output

    out = Output(stdout=StringIO(), stderr=StringIO(), environ={"NO_COLOR": "1"}, width=120)
    views.up(out, result)
    return re.sub(r"\d+\.\d\ds", "N.NNs", out.stdout.getvalue())


def _states(containers: dict) -> dict:
    for c in containers.values():
        c.reload()
    return {n: (c.id, c.attrs["State"]["Status"], c.attrs["State"]["StartedAt"]) for n, c in containers.items()}


def test_the_quick_answer_is_the_ordinary_one(warm_stack, docker_client, settings_of, monkeypatch):
    from qbctl.engine.runtime import Runtime
    from qbctl.stack import up as up_mod
    from qbctl.stack import warm
    from qbctl.stack.up_result import UpOptions

    env, cwd = warm_stack
    containers = _healthy(docker_client, env["QBCTL_PROJECT"])
    before = _states(containers)
    settings = settings_of(env, cwd)
    for options in (UpOptions(), UpOptions(no_ui=True), UpOptions(services=("adminer",))):
        quick = warm.up(settings, options)
        assert quick is not None, f"a running, healthy stack is answered quickly ({options})"
        result, said = quick
        with monkeypatch.context() as m:
            m.setattr(warm, "up", lambda *_: None)  # the ordinary path, as before stack/warm.py
            events = []
            with Runtime() as rt:
                ordinary = up_mod.up(settings, options, events.append, rt=rt)
        assert ordinary.ok and result.ok
        assert _steady(result.to_dict()) == _steady(ordinary.to_dict())
        assert _text(result) == _text(ordinary)
        assert sorted((e.status, e.service) for e in said) == sorted((e.status, e.service) for e in events)
        assert result.exit_code == ordinary.exit_code == 0
    assert _states(containers) == before, "neither path changed a container"


def test_warm_up_from_the_command_line_loads_neither_typer_nor_the_docker_sdk(warm_stack, docker_client):
    env, cwd = warm_stack
    _healthy(docker_client, env["QBCTL_PROJECT"])
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qbctl", "up", "--json"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"qbctl.stack.warm", "qbctl.stack.memo"} & loaded  # worked out, or the kept answer given again
    assert not {m for m in loaded if m.split(".")[0] in ("docker", "typer", "click", "psycopg", "redis", "rich")}
    result = json.loads(proc.stdout)
    assert result["ok"] and {s["action"] for s in result["services"]} == {"keep"}
    text = qbctl("up", env=env, cwd=cwd)
    assert text.returncode == 0 and text.stdout.startswith("service "), text.stdout + text.stderr
    assert f"stack {env['QBCTL_PROJECT']} ready in" in text.stdout
    assert "adminer: ready in" in text.stderr  # the UI's probe, said as the ordinary path says it


@pytest.mark.parametrize("change", ["stopped", "missing", "setting changed", "lock held"])
def test_anything_to_do_goes_to_the_ordinary_path_and_the_quick_one_starts_nothing(
    warm_stack, docker_client, settings_of, change
):
    from qbctl.engine import lock
    from qbctl.stack import warm
    from qbctl.stack.up_result import UpOptions

    env, cwd = warm_stack
    project = env["QBCTL_PROJECT"]
    containers = _healthy(docker_client, project)
    run_env = dict(env)
    held = None
    if change == "stopped":
        containers["redis-commander"].stop(timeout=1)
    elif change == "missing":
        containers["adminer"].remove(force=True)
        del containers["adminer"]
    elif change == "setting changed":
        run_env["QBCTL_ADMINER_MEMORY"] = "96MB"
    else:
        held = open(lock.local_path(project), "a+")  # noqa: SIM115 - held across the calls below
        fcntl.flock(held, fcntl.LOCK_EX)
    before = _states(containers)
    try:
        assert warm.up(settings_of(run_env, cwd), UpOptions()) is None
        assert _states(containers) == before, "the quick path started or changed nothing"
    finally:
        if held is not None:
            held.close()
    proc = qbctl("up", "--json", env=run_env, cwd=cwd)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    actions = {s["name"]: s["action"] for s in json.loads(proc.stdout)["services"]}
    expected = {
        "stopped": {"redis-commander": "start"},
        "missing": {"adminer": "create"},
        "setting changed": {"adminer": "recreate"},
        "lock held": {},
    }[change]
    assert {n: a for n, a in actions.items() if a != "keep"} == expected
    if change == "setting changed":  # back to the module's settings, for the tests after this one
        assert qbctl("up", env=env, cwd=cwd).returncode == 0


def test_an_engine_other_than_the_local_socket_is_left_to_the_ordinary_path(
    warm_stack, docker_client, settings_of, monkeypatch
):
    from qbctl.stack import warm
    from qbctl.stack.up_result import UpOptions

    env, cwd = warm_stack
    _healthy(docker_client, env["QBCTL_PROJECT"])
    settings = settings_of(env, cwd)
    assert warm.up(settings, UpOptions()) is not None
    for host in ("ssh://nobody@192.0.2.1", "tcp://127.0.0.1:1"):
        monkeypatch.setenv("DOCKER_HOST", host)
        assert warm.up(settings, UpOptions()) is None
    monkeypatch.setenv("DOCKER_HOST", f"unix://{cwd}/no-engine-here.sock")
    assert warm.up(settings, UpOptions()) is None


def test_a_stack_that_is_not_there_is_left_to_the_ordinary_path(docker_client, settings_of, tmp_path):
    from qbctl.stack import warm
    from qbctl.stack.up_result import UpOptions

    env = stack_env(new_project())
    assert warm.up(settings_of(env, tmp_path), UpOptions()) is None
    assert not docker_client.containers.list(all=True, filters={"label": f"io.qbctl.project={env['QBCTL_PROJECT']}"})


def _loaded(proc) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def _timed_up(env, cwd, *args):
    import subprocess

    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qbctl", "up", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _times_out(text: str) -> str:
    return re.sub(r"\d+\.\d\ds", "N.NNs", text)


def test_a_kept_answer_is_given_again_only_while_nothing_it_came_from_changed(warm_stack, docker_client, monkeypatch):
    """stack/memo.py: the second warm `up` keeps its answer; the next is that answer, loading no settings and no
    specs, and the same words; a changed env file, variable, container or a held lock is worked out again."""
    from qbctl.engine import lock
    from qbctl.stack import memo

    env, cwd = warm_stack
    project = env["QBCTL_PROJECT"]
    containers = _healthy(docker_client, project)
    memo.forget(str(cwd))
    worked = _timed_up(env, cwd)  # worked out (stack/warm.py), and kept
    assert worked.returncode == 0, worked.stderr
    assert "qbctl.stack.warm" in _loaded(worked) and (cwd / ".qbctl" / "up.memo").is_file()
    assert (cwd / ".qbctl" / ".gitignore").is_file()
    kept = _timed_up(env, cwd)
    assert kept.returncode == 0, kept.stderr
    loaded = _loaded(kept)
    assert "qbctl.stack.memo" in loaded
    assert not loaded & {"qbctl.stack.warm", "qbctl.config.settings", "qbctl.stack.spec", "dataclasses", "dotenv"}
    assert _times_out(kept.stdout) == _times_out(worked.stdout)
    said = [line for line in kept.stderr.splitlines() if not line.startswith("import time:")]
    assert _times_out("\n".join(said)) == _times_out(
        "\n".join(line for line in worked.stderr.splitlines() if not line.startswith("import time:"))
    )
    as_json = qbctl("up", "--json", env=env, cwd=cwd)
    data = json.loads(as_json.stdout)
    assert data["ok"] and {s["action"] for s in data["services"]} == {"keep"}
    assert "***" in data["urls"]["DATABASE_URL"] and env["DATABASE_URL"].split(":")[2].split("@")[0] not in (
        (cwd / ".qbctl" / "up.memo").read_bytes().decode("latin-1")
    ), "the kept answer holds no password"
    before = _states(containers)

    def is_kept(run_env) -> bool:
        with monkeypatch.context() as m:
            for key in [k for k in os.environ if k not in run_env]:
                m.delenv(key)
            for key, value in run_env.items():
                m.setenv(key, value)
            m.chdir(cwd)
            return memo.answer(((), False)) is not None

    assert is_kept(env)
    assert not is_kept({**env, "QBCTL_ADMINER_MEMORY": "96MB"}), "a variable the settings read changed"
    assert not is_kept({**env, "DOCKER_HOST": "unix:///nowhere.sock"}), "another engine"
    (cwd / ".env").write_text("LOG_LEVEL=DEBUG\n")
    try:
        assert not is_kept(env), "the env file changed"
    finally:
        (cwd / ".env").unlink()
    assert is_kept(env), "the same inputs again: the same answer"
    with open(lock.local_path(project), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert not is_kept(env), "another qbctl holds the project"
    assert _states(containers) == before, "looking changed nothing"
    containers["redis-commander"].stop(timeout=1)
    assert not is_kept(env), "a container stopped"
    proc = qbctl("up", "--json", env=env, cwd=cwd)
    actions = {s["name"]: s["action"] for s in json.loads(proc.stdout)["services"]}
    assert {n: a for n, a in actions.items() if a != "keep"} == {"redis-commander": "start"}
