"""The Runtime: one engine per engine and run, opened on first use, and what `close` ends (cli.main closes it)."""

from __future__ import annotations

import io

import pytest

from qbctl.context import AppState
from qbctl.engine.runtime import Runtime
from qbctl.output import Output
from qbctl.transport import reach, ssh


class Opened:
    def __init__(self, url: str) -> None:
        self.url, self.usable, self.tunnel = url, True, None


@pytest.fixture
def opener(monkeypatch):
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    reach.forget()
    opened: list[Opened] = []

    def open_engine(tgt):
        opened.append(Opened(tgt.url))
        return opened[-1]

    yield open_engine, opened
    reach.forget()


def test_the_engine_is_opened_once_and_again_when_it_became_unusable(opener, monkeypatch):
    open_engine, opened = opener
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/one.sock")
    rt = Runtime(opener=open_engine)
    assert opened == []  # nothing until asked
    first = rt.engine
    assert rt.engine is first and len(opened) == 1
    first.usable = False  # an ssh engine whose connection ended
    assert rt.engine is not first and len(opened) == 2


def test_close_ends_the_ssh_tunnels_only_after_an_ssh_engine_and_forgets_the_target(opener, monkeypatch):
    open_engine, _ = opener
    closed = []
    monkeypatch.setattr(ssh, "close_all", lambda: closed.append(True))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/one.sock")
    with Runtime(opener=open_engine) as rt:
        assert rt.engine.url.startswith("unix:")
    assert closed == [] and rt.closed and not reach._cache
    monkeypatch.setenv("DOCKER_HOST", "ssh://dev@vm")
    with Runtime(opener=open_engine) as rt:
        assert rt.engine.url.startswith("ssh://")
    assert closed == [True] and not reach._cache


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
