"""What one command holds while it runs, built once at the edge and closed when the command ends.

`cli.main` (through `AppState.rt`) and the pytest plugin make one `Runtime` per command and pass it (`rt=`) to
the workflows, the stack, the checks, the snapshots and `db.connect`: the engine connection is opened on first
use, once per engine, and `close` ends what the run opened. It owns:

- the engines it opened (one per engine URL; one whose ssh connection ended is opened again);
- `reach` (qbctl.transport.reach.Reach): the resolved engine target and the run's ssh tunnels (one ssh
  connection per destination, opened once whichever thread asks first). The engine's connection takes its
  tunnel from there and the db connections reach a local URL through `rt.reach.endpoint`, so both share it;
- `holds`: the project locks this command holds (engine/lock.py: re-entrant per command).

Nothing of this is module-level: two Runtimes share no engine, target or tunnel (docs/architecture.md).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from qbctl.engine.facade import Engine, open_engine
from qbctl.engine.lock import Holds
from qbctl.transport import target
from qbctl.transport.reach import Reach

if TYPE_CHECKING:
    from qbctl.transport.ssh import Tunnels


class Runtime:
    def __init__(self, opener: Callable[[target.Target, Tunnels], Engine] = open_engine) -> None:
        self._opener = opener
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.reach = Reach()  # the engine target and the ssh tunnels of this run
        self.holds = Holds()  # the project locks this command holds (engine/lock.py: re-entrant per command)
        self.closed = False

    @property
    def engine(self) -> Engine:
        """The engine (DOCKER_HOST, else the Docker context), or DOCKER_UNAVAILABLE / SSH_FAILED (exit 3).

        One Engine per engine and run; one that became unusable (its ssh connection ended) is opened again."""
        tgt = self.reach.current()
        with self._lock:
            eng = self._engines.get(tgt.url)
            if eng is None or not eng.usable:
                eng = self._opener(tgt, self.reach.tunnels)
                self._engines[tgt.url] = eng
            return eng

    def engine_at(self, url: str, source: str) -> Engine:
        """An engine other than the project's, named by a URL as DOCKER_HOST names one (`source`: the setting it
        came from): the developer's own engine, where a remote project's rehearsal copy runs. Kept as `engine`."""
        tgt = target.parse(url, source)
        with self._lock:
            eng = self._engines.get(tgt.url)
            if eng is None or not eng.usable:
                eng = self._opener(tgt, self.reach.tunnels)
                self._engines[tgt.url] = eng
            return eng

    def allow_for_latency(self, seconds: float) -> float:
        """A timeout meant for a local engine, grown by the measured round trips to a remote one
        (connecting first: the ssh handshake does not count against the checks)."""
        if not self.reach.engine_is_remote():
            return seconds
        return self.engine.allow(seconds)

    def close(self) -> None:
        """End what this run opened: the engines, the ssh tunnels, the resolved target. Safe to call twice."""
        with self._lock:
            self._engines.clear()
        self.reach.close()
        self.closed = True

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FixedRuntime(Runtime):
    """A runtime around an engine that is already open (a test's fake, or a caller's own): `engine` is it."""

    def __init__(self, eng: Engine) -> None:
        super().__init__(opener=lambda tgt, tunnels: eng)
        self._fixed = eng

    @property
    def engine(self) -> Engine:
        return self._fixed

    def allow_for_latency(self, seconds: float) -> float:
        return self._fixed.allow(seconds)
