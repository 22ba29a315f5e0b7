"""A per-project lock, so that two qbctl runs on one project take turns instead of racing.

Re-entrant within one process: a command that holds it (reset, restore, upgrade) may call
another that takes it (a snapshot, up) without waiting on itself.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

_held: dict[str, int] = {}  # project -> depth, in this process
_guard = threading.Lock()


@contextmanager
def project_lock(project: str, on_wait=None):
    with _guard:
        if _held.get(project):
            _held[project] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[project] -= 1
        return
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    path = folder / f"qbctl-{os.getuid()}-{project}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"another qbctl is changing project {project}; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        with _guard:
            _held[project] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(project, None)
            fcntl.flock(f, fcntl.LOCK_UN)
