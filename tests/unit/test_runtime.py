"""The Runtime: one engine per engine and run, opened on first use, and what `close` ends (cli.main closes it)."""

from __future__ import annotations

import io

import pytest

from qbctl.context import AppState
from qbctl.engine.runtime import Runtime
from qbctl.errors import Unavailable
from qbctl.output import Output
from qbctl.transport import ssh
from qbctl.transport.target import SshDest


class Opened:
    def __init__(self, url: str) -> None:
        self.url, self.usable, self.tunnel = url, True, None


@pytest.fixture
def opener(monkeypatch):
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    opened: list[Opened] = []

    def open_engine(tgt, tunnels):
        opened.append(Opened(tgt.url))
        return opened[-1]

    yield open_engine, opened


def test_the_engine_is_opened_once_and_again_when_it_became_unusable(opener, monkeypatch):
    open_engine, opened = opener
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/one.sock")
    rt = Runtime(opener=open_engine)
    assert opened == []  # nothing until asked
    first = rt.engine
    assert rt.engine is first and len(opened) == 1
    first.usable = False  # an ssh engine whose connection ended
    assert rt.engine is not first and len(opened) == 2


class FakeTunnel:
    """What ssh.Tunnels keeps per destination, without ssh: open, then closed by the registry."""

    def __init__(self, dest: SshDest) -> None:
        self.dest, self.alive, self.forwards = dest, False, 0

    def open(self) -> None:
        self.alive = True

    def forward(self, host: str, port: int) -> tuple[str, int]:
        self.forwards += 1
        return "127.0.0.1", 40000 + port % 1000

    def close(self) -> None:
        self.alive = False


@pytest.fixture
def fake_ssh(monkeypatch):
    """ssh.Tunnels opens FakeTunnels: the registries' bookkeeping, no ssh process."""
    made: list[FakeTunnel] = []

    def tunnel(dest: SshDest) -> FakeTunnel:
        made.append(FakeTunnel(dest))
        return made[-1]

    monkeypatch.setattr(ssh, "Tunnel", tunnel)
    monkeypatch.setattr(ssh.shutil, "which", lambda name: "/usr/bin/" + name)
    return made


def test_close_ends_the_ssh_tunnels_and_forgets_the_target(opener, monkeypatch, fake_ssh):
    open_engine, _ = opener
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/one.sock")
    with Runtime(opener=open_engine) as rt:
        assert rt.engine.url.startswith("unix:")
    assert rt.closed and not rt.reach.targets() and fake_ssh == []  # a local engine: no ssh at all
    monkeypatch.setenv("DOCKER_HOST", "ssh://dev@vm")
    with Runtime(opener=open_engine) as rt:
        assert rt.engine.url.startswith("ssh://")
        assert rt.reach.endpoint("localhost", 5432) == ("127.0.0.1", 40432)  # a db forward: the run's tunnel
        assert rt.reach.tunnels.destinations() == [SshDest("vm", user="dev")] and fake_ssh[0].alive
    assert not rt.reach.targets() and rt.reach.tunnels.destinations() == [] and not fake_ssh[0].alive


def test_two_runtimes_share_no_target_and_no_tunnel(monkeypatch, fake_ssh):
    """Each command's Runtime owns its Reach: what one resolves and opens, the other neither sees nor closes."""
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "ssh://dev@vm")
    one, two = Runtime(), Runtime()
    assert one.reach is not two.reach and one.reach.tunnels is not two.reach.tunnels
    one.reach.endpoint("localhost", 5432)
    one.reach.endpoint("localhost", 6379)  # the same destination: the same tunnel
    assert len(fake_ssh) == 1 and len(one.reach.targets()) == 1
    assert two.reach.targets() == [] and two.reach.tunnels.destinations() == []
    two.reach.endpoint("localhost", 5432)
    assert len(fake_ssh) == 2 and fake_ssh[0] is not fake_ssh[1]  # its own ssh connection
    one.close()
    assert one.reach.targets() == [] and one.reach.tunnels.destinations() == [] and not fake_ssh[0].alive
    assert fake_ssh[1].alive and len(two.reach.targets()) == 1  # the other runtime's are untouched
    assert two.reach.tunnels.destinations() == [SshDest("vm", user="dev")]
    two.close()
    assert not fake_ssh[1].alive and two.reach.tunnels.destinations() == []


def test_a_tunnel_that_failed_is_remembered_until_close(monkeypatch):
    """The same error again within a run (no second ssh attempt), and a fresh try after close."""
    tunnels = ssh.Tunnels()
    monkeypatch.setattr(ssh.shutil, "which", lambda name: None)
    dest = SshDest("vm")
    for _ in range(2):
        with pytest.raises(Unavailable) as caught:
            tunnels.tunnel(dest)
        assert caught.value.code == "SSH_FAILED"
    assert tunnels.destinations() == [dest]
    tunnels.close()
    assert tunnels.destinations() == []


def test_cli_main_closes_the_commands_runtime_whatever_ended_it(tmp_path, monkeypatch):
    from qbctl.cli import main

    class Spy(Runtime):
        def close(self) -> None:
            closed.append(True)

    closed: list[bool] = []
    monkeypatch.chdir(tmp_path)
    state = AppState(out=Output(stdout=io.StringIO(), stderr=io.StringIO()))
    state._rt = Spy()
    assert main(["no-such-command"], state) == 2  # a usage error ends it
    assert closed == [True] and state._rt is None
    untouched = AppState(out=Output(stdout=io.StringIO(), stderr=io.StringIO()))
    main(["config", "show", "--json"], untouched)
    assert untouched._rt is None  # a command that never needs the engine builds no runtime


def test_the_project_lock_is_reentrant_within_one_command(tmp_path, monkeypatch):
    from qbctl.engine.lock import project_lock

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # the local lock's file
    rt = Runtime()
    with project_lock("qbholds", holds=rt.holds):
        with project_lock("qbholds", holds=rt.holds):  # reset's snapshot, restore's up: no wait on itself
            assert "qbholds" in rt.holds
        assert "qbholds" in rt.holds
    assert "qbholds" not in rt.holds
