"""A per-project lock, so that two qbctl runs on one project take turns instead of racing.

On a local engine: a file lock on this machine (free; the engine's host is this machine).
On a remote engine: a lock on the engine itself, so that two people (or a laptop and CI) driving
one VM take turns: a container named <project>-lock, never started, made from an empty image.
The engine creates a name once, atomically; the loser waits, told who holds it (user@host, pid)
and since when. A holder that crashed leaves its lock until its expiry (TTL) passes, or at once
when it ran on this machine and its process is gone; `docker rm <project>-lock` frees it by hand.

Re-entrant within one process: a command that holds it (reset, restore, upgrade) may call
another that takes it (a snapshot, up) without waiting on itself.
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
from typing import TYPE_CHECKING

from qbctl.engine.connection import engine_call
from qbctl.engine.labels import LABEL_LOCK, LABEL_LOCK_EXPIRES, LABEL_LOCK_HOLDER, LABEL_LOCK_IMAGE, LABEL_LOCK_SINCE
from qbctl.errors import NotOwned, Unavailable
from qbctl.events import Event, Events, Status, ignore

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine

TTL = 30 * 60  # seconds a remote lock outlives a holder that never released it
POLL = 0.5
_held: dict[str, int] = {}  # project -> depth, in this process
_guard = threading.Lock()


@contextmanager
def project_lock(project: str, events: Events = ignore, eng=None, ttl: float = TTL):
    """The project's lock for the duration of the block: on the engine when it is remote. Re-entrant."""
    with _guard:
        reentered = bool(_held.get(project))
        _held[project] = _held.get(project, 0) + 1
    try:
        if reentered:
            yield
        else:
            with _take(project, events, eng, ttl):
                yield
    finally:
        with _guard:
            _held[project] -= 1
            if not _held[project]:
                del _held[project]


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
    return {LABEL_LOCK_HOLDER: f"{_user()}@{socket.gethostname()} pid {os.getpid()}",
            LABEL_LOCK_SINCE: str(int(now)), LABEL_LOCK_EXPIRES: str(int(now + ttl))}


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
            events(Event(Status.WAITING, f"project {project} on {eng.host} is locked by {describe(held)}; waiting "
                         f"for it (`docker rm {project}-lock` there if that run is gone)"))
        time.sleep(POLL)
    try:
        yield
    finally:
        try:
            eng.unlock(lock_id)
        except Exception:  # noqa: BLE001 - the engine went away: the lock expires by itself (TTL)
            pass


# --- the lock container on the engine ---------------------------------------------------------------
@engine_call("taking the project's lock")
def try_lock(eng: Engine, project: str, labels: dict[str, str]) -> tuple[str | None, dict]:
    """Create the never-started container <project>-lock: the engine makes a name unique
    atomically. (its id, {}) when taken now; (None, the holder's labels with its "id") when held."""
    from docker.errors import APIError, NotFound

    name = f"{project}-lock"
    try:
        cid = eng.api.create_container(_lock_image(eng), command=["lock"], name=name,
                                         labels={LABEL_LOCK: project, **labels})["Id"]
        return cid, {}
    except APIError as exc:
        if exc.status_code != 409 and "already in use" not in str(exc):
            raise
    try:
        info = eng.api.inspect_container(name)
    except NotFound:
        return None, {}  # released in between: the caller tries again
    found = info["Config"].get("Labels") or {}
    if found.get(LABEL_LOCK) != project:
        raise NotOwned(f"a container named {name} exists and is not qbctl's lock of project {project}",
                       hint="qbctl never touches it: remove or rename it yourself, or use --project OTHER")
    return None, {**found, "id": info["Id"]}


@engine_call("releasing the project's lock")
def unlock(eng: Engine, lock_id: str) -> None:
    from docker.errors import NotFound

    try:
        eng.api.remove_container(lock_id, force=True)
    except NotFound:
        pass


def _lock_image(eng: Engine) -> str:
    """The empty image lock containers are made from (imported once per engine: no pull, no layers)."""
    import io
    import re
    import tarfile

    found = eng.api.images(filters={"label": f"{LABEL_LOCK_IMAGE}=1"})
    if found:
        return found[0]["Id"]
    buf = io.BytesIO()
    tarfile.open(fileobj=buf, mode="w").close()
    out = eng.api.import_image_from_data(buf.getvalue(), changes=[f"LABEL {LABEL_LOCK_IMAGE}=1"])
    found = eng.api.images(filters={"label": f"{LABEL_LOCK_IMAGE}=1"})
    if found:
        return found[0]["Id"]
    ids = re.findall(r"sha256:[0-9a-f]{64}", str(out))
    if not ids:
        raise Unavailable(f"the engine at {eng.where} did not import the lock image: {str(out)[:200]}",
                          code="ENGINE_ERROR")
    return ids[-1]
