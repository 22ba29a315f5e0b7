"""`up` driven end to end against a fake engine handed in through the Runtime: the port check, the pull, the plan,
its execution and the wait, with no Docker engine, no server and no network (the probes answer as told)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from qbctl.config import settings as S
from qbctl.engine.containers import Container, ContainerState
from qbctl.engine.labels import LABEL_CONFIG, LABEL_SERVICE
from qbctl.engine.runtime import FixedRuntime
from qbctl.errors import QbctlError
from qbctl.stack import probes, warm
from qbctl.stack import up as up_mod
from qbctl.stack.spec import build_stack

PG_IMAGE = {"Id": "sha256:" + "1" * 64, "Config": {"Env": ["PG_MAJOR=15"]}}


class FakeEngine:
    """What `up` asks of an Engine, answered from memory; every change is recorded in `calls`."""

    where, host, remote, product, rtt, tunnel = "unix:///fake.sock", "this machine", False, "docker", 0.0, None

    def __init__(self, images: dict[str, dict] | None = None, states: dict[str, ContainerState] | None = None):
        self.images = dict(images or {})
        self.states = states or {}
        self.running: dict[str, Container] = {}  # service -> its container
        self.calls: list[tuple] = []

    def allow(self, seconds: float) -> float:
        return seconds

    def containers(self, project: str, service: str | None = None, running_only: bool = False) -> list[Container]:
        return [c for c in self.running.values() if service in (None, c.service)]

    def container_on_port(self, port: int):
        return None

    def image_info(self, image: str) -> dict | None:
        return self.images.get(image)

    def pull(self, spec, events) -> dict:
        self.calls.append(("pull", spec.image))
        self.images[spec.image] = PG_IMAGE if spec.name == "postgres" else {"Id": f"sha256:{spec.name}", "Config": {}}
        return self.images[spec.image]

    def volumes(self, project: str, service: str | None = None) -> dict[str, dict]:
        return {}

    def ensure_network(self, stack) -> None:
        self.calls.append(("network", stack.network))

    def ensure_volumes(self, stack, specs, created_by) -> dict[str, dict]:
        self.calls.append(("volumes", tuple(v for s in specs for v, _ in s.volumes)))
        return {}

    def create_and_start(self, stack, spec) -> str:
        self.calls.append(("create", spec.name))
        cid = f"id-{spec.name}"
        labels = {LABEL_SERVICE: spec.name, LABEL_CONFIG: spec.config_hash()}
        self.running[spec.name] = Container(
            cid,
            stack.container_name(spec.name),
            spec.name,
            "running",
            "Up 1 second (healthy)",
            spec.image,
            self.images[spec.image]["Id"],
            labels,
            (),
        )
        return cid

    def start(self, container_id: str, spec=None) -> None:
        self.calls.append(("start", container_id))

    def remove_container(self, container_id: str, timeout: int = 10) -> None:
        self.calls.append(("remove", container_id))

    def state(self, container_id: str) -> ContainerState:
        return self.states.get(container_id, ContainerState("running", 0, False, 0, "healthy"))

    def tail_logs(self, container_id: str, lines: int = 20, since: int | None = None) -> list[str]:
        return [f"last words of {container_id}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/fake.sock")  # a local engine: ports checked here
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # the project lock's file
    monkeypatch.setattr(warm, "up", lambda *_: None)  # the ordinary path, not the raw-socket quick answer
    ports = [free_port() for _ in range(4)]
    env = {
        "QBCTL_PROJECT": "qbfake",
        "DATABASE_URL": f"postgresql://u:p@localhost:{ports[0]}/db",
        "REDIS_URL": f"redis://localhost:{ports[1]}/0",
        "QBCTL_ADMINER_PORT": str(ports[2]),
        "QBCTL_REDIS_COMMANDER_PORT": str(ports[3]),
    }
    yield S.load(environ=env, cwd=Path("/nonexistent-qbctl-test"))


@pytest.fixture
def answered(monkeypatch):
    """Every probe answers at once."""
    asked = []

    def probe(spec, settings, timeout=2.0, *, rt):
        asked.append(spec.name)
        return probes.ProbeResult(True, f"{spec.probe} answered")

    monkeypatch.setattr(probes, "probe", probe)
    return asked


def test_a_first_up_pulls_plans_creates_in_order_and_waits(settings, answered):
    stack = build_stack(settings)
    eng = FakeEngine(
        images={s.image: {"Id": f"sha256:{s.name}", "Config": {}} for s in stack.services if s.name != "postgres"}
    )
    events = []
    result = up_mod.up(settings, up_mod.UpOptions(), events.append, rt=FixedRuntime(eng))
    assert result.ok and result.error is None, result.error
    assert eng.calls == [
        ("pull", stack.get("postgres").image),
        ("network", stack.network),
        ("volumes", ("qbfake_pgdata", "qbfake_redisdata")),
        ("create", "postgres"),
        ("create", "redis"),
        ("create", "adminer"),
        ("create", "redis-commander"),
    ]
    assert [s.action for s in result.services] == ["create"] * 4
    assert all(s.ready for s in result.services) and sorted(answered) == sorted(s.name for s in stack.services)
    assert "create" in result.plan and result.next == up_mod.NEXT_COMMANDS
    assert {"images", "start", "ready"} <= set(result.timings)
    assert result.engine["where"] == eng.where and result.engine["remote"] is False
    said = [(e.status, e.service) for e in events]
    assert ("pulling", "postgres") in said and ("done", "redis") in said


def test_a_second_up_keeps_everything_and_changes_nothing(settings, answered):
    eng = FakeEngine()
    up_mod.up(settings, up_mod.UpOptions(), rt=FixedRuntime(eng))
    eng.calls.clear()
    answered.clear()
    result = up_mod.up(settings, up_mod.UpOptions(), rt=FixedRuntime(eng))
    assert result.ok and eng.calls == []
    assert [s.action for s in result.services] == ["keep"] * 4
    assert [s.detail for s in result.services] == ["already ready"] * 4 and answered == []


def test_a_busy_port_is_said_before_anything_is_pulled_or_created(settings, answered):
    eng = FakeEngine()
    with socket.create_server(("127.0.0.1", settings.redis.port)):
        with pytest.raises(QbctlError) as caught:
            up_mod.up(settings, up_mod.UpOptions(), rt=FixedRuntime(eng))
    assert caught.value.code == "PORT_IN_USE" and caught.value.details["setting"] == "REDIS_URL"
    assert eng.calls == [] and answered == []


def test_a_container_that_exits_fails_up_with_its_last_log_lines(settings, answered):
    eng = FakeEngine(states={"id-redis": ContainerState("exited", 1, False, 0, None)})
    result = up_mod.up(settings, up_mod.UpOptions(services=("redis",)), rt=FixedRuntime(eng))
    assert not result.ok and result.error.code == "UNHEALTHY" and result.exit_code == 1
    (redis,) = result.services
    assert not redis.ready and redis.exit_code == 1 and redis.detail == "container exited with code 1"
    assert redis.logs == ["last words of id-redis"]
