"""A per-project lock, so that two qbctl runs on one project take turns instead of racing.

On a local engine: a file lock on this machine (free; the engine's host is this machine).
On a remote engine: a lock on the engine itself, so that two people (or a laptop and CI) driving
one VM take turns: a container named <project>-lock, never started, made from an empty image.
The engine creates a name once, atomically; the loser waits, told who holds it (user@host, pid)
and since when. A holder that crashed leaves its lock until its expiry (TTL) passes, or at once
when it ran on this machine and its process is gone; `docker rm <project>-lock` frees it by hand.

Re-entrant within one command: a command that holds it (reset, restore, upgrade) may call
another that takes it (a snapshot, up) without waiting on itself. What the command holds is its
Runtime's `holds` (engine/runtime.py), passed in: no module-level record.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from qbctl.engine.labels import LABEL_LOCK_EXPIRES, LABEL_LOCK_HOLDER, LABEL_LOCK_SINCE
from qbctl.events import Event, Events, Status, ignore

TTL = 30 * 60  # seconds a remote lock outlives a holder that never released it
POLL = 0.5


class Holds:
    """The project locks one command holds, and how deeply (a Runtime's `holds`): re-entrant for that command."""

    def __init__(self) -> None:
        self._depth: dict[str, int] = {}
        self._guard = threading.Lock()

    def enter(self, project: str) -> bool:
        """Count one more hold; whether the lock was held already."""
        with self._guard:
            depth = self._depth.get(project, 0)
            self._depth[project] = depth + 1
            return depth > 0

    def leave(self, project: str) -> None:
        with self._guard:
            self._depth[project] -= 1
            if not self._depth[project]:
                del self._depth[project]

    def __contains__(self, project: str) -> bool:
        with self._guard:
            return project in self._depth


@contextmanager
def project_lock(project: str, events: Events = ignore, eng=None, ttl: float = TTL, *, holds: Holds):
    """The project's lock for the duration of the block: on the engine when it is remote. Re-entrant within
    the command whose `holds` is passed (its Runtime's)."""
    reentered = holds.enter(project)
    try:
        if reentered:
            yield
        else:
            with _take(project, events, eng, ttl):
                yield
    finally:
        holds.leave(project)


@contextmanager
def _take(project: str, events: Events, eng, ttl: float):
    if eng is not None and eng.remote:
        with engine_lock(eng, project, events, ttl):
            yield
        return
    with open(local_path(project), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            events(Event(Status.WAITING, f"another qbctl is changing project {project}; waiting for it to finish"))
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def local_path(project: str) -> Path:
    """The file a local engine's project lock is taken on (flock), on this machine."""
    import tempfile  # here: a warm `up` (stack/warm.py) takes the lock without tempfile's imports

    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return folder / f"qbctl-{os.getuid()}-{project}.lock"


def holder_labels(ttl: float, now: float | None = None) -> dict[str, str]:
    now = time.time() if now is None else now
    return {
        LABEL_LOCK_HOLDER: f"{_user()}@{socket.gethostname()} pid {os.getpid()}",
        LABEL_LOCK_SINCE: str(int(now)),
        LABEL_LOCK_EXPIRES: str(int(now + ttl)),
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no name for this uid
        return str(os.getuid())


def stale(labels: dict, now: float | None = None, pid_alive=None) -> bool:
    """Whether a held lock may be taken: past its expiry, or its holder ran here and is gone. Pure
    but for pid_alive (os.kill(pid, 0) by default)."""
    now = time.time() if now is None else now
    try:
        if now > float(labels.get(LABEL_LOCK_EXPIRES, "0")):
            return True
    except ValueError:
        return True
    who = labels.get(LABEL_LOCK_HOLDER, "")
    at, _, pid = who.partition(" pid ")
    if at.rpartition("@")[2] == socket.gethostname() and pid.isdigit():
        return not (pid_alive or _pid_alive)(int(pid))
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(labels: dict) -> str:
    """'alice@laptop pid 812 since 12:01:02 UTC (expires 12:31:02 UTC)'. Pure."""

    def at(key: str) -> str:
        try:
            return datetime.fromtimestamp(float(labels.get(key, "")), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            return "?"

    who = labels.get(LABEL_LOCK_HOLDER) or "someone"
    return f"{who} since {at(LABEL_LOCK_SINCE)} (expires {at(LABEL_LOCK_EXPIRES)})"


@contextmanager
def engine_lock(eng, project: str, events: Events = ignore, ttl: float = TTL):
    said = None
    while True:
        lock_id, held = eng.try_lock(project, holder_labels(ttl))
        if lock_id:
            break
        if held and stale(held):
            eng.unlock(held["id"])  # by id: a lock taken meanwhile by someone else has another id
            continue
        if held and held.get("id") != said:
            said = held.get("id")
            events(
                Event(
                    Status.WAITING,
                    f"project {project} on {eng.host} is locked by {describe(held)}; waiting "
                    f"for it (`docker rm {project}-lock` there if that run is gone)",
                )
            )
        time.sleep(POLL)
    try:
        yield
    finally:
        try:
            eng.unlock(lock_id)
        except Exception:  # noqa: BLE001 - the engine went away: the lock expires by itself (TTL)
            pass
