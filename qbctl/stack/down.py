"""down: this project's containers and network removed (only objects labelled with it); the data stays.

Progress goes out as events (qbctl.events); nothing here prints.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.engine import facade as engine
from qbctl.engine.lock import project_lock
from qbctl.engine.runtime import Runtime
from qbctl.errors import QbctlError
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result
from qbctl.stack.spec import require_project


@dataclass
class DownResult(Result):
    project: str
    removed: list[str]
    volumes_removed: list[str] = field(default_factory=list)
    network_removed: bool = False
    ok: bool = True
    error: QbctlError | None = None


def down(settings: Settings, events: Events = ignore, *, rt: Runtime) -> DownResult:
    """Remove this project's containers and network; its volumes (the data) stay."""
    require_project(settings, "nothing was removed")
    eng = rt.engine
    project = settings.project
    with project_lock(project, events, eng=eng, holds=rt.holds):
        removed = remove_containers(eng, project, events)
        net = eng.remove_networks(project)
    return DownResult(project, removed, [], net)


def remove_containers(eng: engine.Engine, project: str, events: Events) -> list[str]:
    # UIs first, then the servers they depend on; all at once, each stop takes its own time.
    containers = sorted(eng.containers(project), key=lambda c: c.service in ("postgres", "redis"))
    errors: dict[str, QbctlError] = {}

    def remove(c: engine.Container) -> None:
        try:
            eng.remove_container(c.id)
        except QbctlError as exc:  # said once, after every thread is done
            errors[c.name] = exc

    threads = [threading.Thread(target=remove, args=(c,)) for c in containers]
    for t in threads:
        t.start()
    removed = []
    for t, c in zip(threads, containers, strict=True):
        t.join()
        if c.name not in errors:
            removed.append(c.name)
            events(Event(Status.WORKING, "removed", c.service or c.name))
    if errors:
        raise next(iter(errors.values()))
    return removed
