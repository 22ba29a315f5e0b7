"""reset: this project's containers, volumes and network removed, its data snapshotted first when asked.

A workflow: the stack's removal (stack/down.py) and a snapshot (snapshots/snapshot.py) under one lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbctl.config.settings import Settings
from qbctl.engine.lock import project_lock
from qbctl.engine.runtime import Runtime
from qbctl.events import Event, Events, Status, ignore
from qbctl.stack.down import DownResult, remove_containers
from qbctl.stack.spec import require_project


@dataclass(frozen=True, kw_only=True)
class ResetOptions:
    snapshot: bool = False  # take an automatic snapshot first (`qbctl reset`; not `ci teardown`)


@dataclass
class ResetResult(DownResult):
    snapshot: str | None = None  # the automatic snapshot of the data removed
    snapshot_skipped: str | None = None  # why there is none


def reset(
    settings: Settings, options: ResetOptions = ResetOptions(), events: Events = ignore, *, rt: Runtime
) -> ResetResult:
    """Remove this project's containers, volumes and network: only objects labelled with it.

    With options.snapshot, the data is snapshotted first (see qbctl.snapshots); a snapshot that
    fails stops the reset before anything is removed."""
    require_project(settings, "nothing was removed")
    eng = rt.engine
    project = settings.project
    with project_lock(project, events, eng=eng, holds=rt.holds):
        taken = skipped = None
        if options.snapshot:
            from qbctl.snapshots import snapshot

            done = snapshot.guard(eng, settings, "reset", events, rt=rt)
            taken, skipped = done.name, done.skipped
        removed = remove_containers(eng, project, events)
        net = eng.remove_networks(project)
        events(Event(Status.WORKING, "removing volumes"))
        vols = eng.remove_volumes(project)
    return ResetResult(project, removed, vols, net, snapshot=taken, snapshot_skipped=skipped)
