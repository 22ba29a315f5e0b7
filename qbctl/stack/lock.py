"""A per-project lock, so that two qbctl runs on one project take turns instead of racing."""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from qbctl.events import Event, Events, Status, ignore


@contextmanager
def project_lock(project: str, events: Events = ignore):
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    path = folder / f"qbctl-{os.getuid()}-{project}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            events(Event(Status.WAITING, f"another qbctl is changing project {project}; waiting for it to finish"))
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
