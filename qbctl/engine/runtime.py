"""What one command holds while it runs, built once at the edge and closed when the command ends.

`cli.main` (through `AppState.rt`) and the pytest plugin make one `Runtime` per command and pass it (`rt=`) to
the workflows, the stack, the checks and the snapshots: the engine connection is opened on first use, once per
engine (an ssh engine's tunnel is opened once, whichever thread asks first), and `close` ends what the run
opened: the ssh tunnels (qbctl.transport.ssh) and the resolved engine target (qbctl.transport.reach).

Those two registries stay module-level in the transport layer, because `db.connect` reaches a local URL through
them without a runtime in hand (docs/architecture.md lists them); the runtime is what closes them.
"""

from __future__ import annotations

import threading
from typing import Callable

from qbctl.engine.facade import Engine, open_engine
from qbctl.engine.lock import Holds
from qbctl.transport import reach, target


class Runtime:
    def __init__(self, opener: Callable[[target.Target], Engine] = open_engine) -> None:
        self._opener = opener
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.holds = Holds()  # the project locks this command holds (engine/lock.py: re-entrant per command)
        self.closed = False

    @property
    def engine(self) -> Engine:
        """The engine (DOCKER_HOST, else the Docker context), or DOCKER_UNAVAILABLE / SSH_FAILED (exit 3).

        One Engine per engine and run; one that became unusable (its ssh connection ended) is opened again."""
        tgt = reach.current()
        with self._lock:
            eng = self._engines.get(tgt.url)
            if eng is None or not eng.usable:
                eng = self._opener(tgt)
                self._engines[tgt.url] = eng
            return eng

    def engine_at(self, url: str, source: str) -> Engine:
        """An engine other than the project's, named by a URL as DOCKER_HOST names one (`source`: the setting it
        came from): the developer's own engine, where a remote project's rehearsal copy runs. Kept as `engine`."""
        tgt = target.parse(url, source)
        with self._lock:
            eng = self._engines.get(tgt.url)
            if eng is None or not eng.usable:
                eng = self._opener(tgt)
                self._engines[tgt.url] = eng
            return eng

    def allow_for_latency(self, seconds: float) -> float:
        """A timeout meant for a local engine, grown by the measured round trips to a remote one
        (connecting first: the ssh handshake does not count against the checks)."""
        if not reach.engine_is_remote():
            return seconds
        return self.engine.allow(seconds)

    def close(self) -> None:
        """End what this run opened: the engines, the ssh tunnels, the resolved target. Safe to call twice."""
        with self._lock:
            tunnelled = any(e.tunnel is not None for e in self._engines.values())
            self._engines.clear()
        if tunnelled or reach.resolved_ssh():
            from qbctl.transport import ssh

            ssh.close_all()
        reach.forget()
        self.closed = True

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FixedRuntime(Runtime):
    """A runtime around an engine that is already open (a test's fake, or a caller's own): `engine` is it."""

    def __init__(self, eng: Engine) -> None:
        super().__init__(opener=lambda tgt: eng)
        self._fixed = eng

    @property
    def engine(self) -> Engine:
        return self._fixed

    def allow_for_latency(self, seconds: float) -> float:
        return self._fixed.allow(seconds)
