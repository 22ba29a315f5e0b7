"""Progress, as typed events: what logic reports while it works, for the edge to show.

Logic never prints. It calls `events(Event(...))`; `output.Output.progress` decides how that looks on a
terminal (a live line per service, a bar when there is a total), in a log (one line per event
that matters), or under --json (nothing but warnings). Every command uses this one shape:
up, down, reset, migrate, seed, pull, lock waits, ci steps, budget --load.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Callable


class Status(StrEnum):
    WORKING = "working"  # a step under way; shown live on a terminal, not logged
    WAITING = "waiting"  # blocked on something else (a lock, a server): logged
    PULLING = "pulling"  # an image download; the first event of a pull is logged
    DONE = "done"  # a milestone reached (a service ready, a file applied): logged
    FAILED = "failed"  # logged
    WARNING = "warning"  # logged as `warning: ...`, even under --json
    INFO = "info"  # a line worth keeping in a log (a ci step starting)


@dataclass(frozen=True)
class Event:
    status: Status
    text: str
    service: str = ""  # "" for the stack or the command as a whole
    done: float | None = None  # progress towards `total` (bytes pulled, symbols seeded, seconds of load)
    total: float | None = None

    def line(self) -> str:
        return f"{self.service}: {self.text}" if self.service else self.text


Events = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The listener of a caller that wants no progress (tests, library use)."""
