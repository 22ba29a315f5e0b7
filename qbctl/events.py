"""Progress, as typed events: what logic reports while it works, for the edge to show.

Logic never prints. It calls `events(Event(...))`; `output.Output.progress` decides how that looks on a
terminal (a live line per service, a bar when there is a total), in a log (one line per event
that matters), or under --json (nothing but warnings). Every command uses this one shape:
up, down, reset, migrate, seed, pull, lock waits, ci steps, budget --load.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class Status(StrEnum):
    WORKING = "working"  # a step under way; shown live on a terminal, not logged
    WAITING = "waiting"  # blocked on something else (a lock, a server): logged
    PULLING = "pulling"  # an image download; the first event of a pull is logged
    DONE = "done"  # a milestone reached (a service ready, a file applied): logged
    FAILED = "failed"  # logged
    WARNING = "warning"  # logged as `warning: ...`, even under --json
    INFO = "info"  # a line worth keeping in a log (a ci step starting)


class Event:
    """One event: frozen, compared by value. A plain class, not a dataclass: a warm `up` (qbctl/launch.py)
    shows events before anything else loads, and `dataclasses` alone would cost it ~9 ms (it imports inspect)."""

    __slots__ = ("status", "text", "service", "done", "total")
    status: Status
    text: str
    service: str  # "" for the stack or the command as a whole
    done: float | None  # progress towards `total` (bytes pulled, symbols seeded, seconds of load)
    total: float | None

    def __init__(
        self, status: Status, text: str, service: str = "", done: float | None = None, total: float | None = None
    ) -> None:
        for name, value in zip(self.__slots__, (status, text, service, done, total), strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Event is frozen: cannot set {name}")

    def _values(self) -> tuple:
        return self.status, self.text, self.service, self.done, self.total

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "Event(" + ", ".join(f"{n}={v!r}" for n, v in zip(self.__slots__, self._values(), strict=True)) + ")"

    def line(self) -> str:
        return f"{self.service}: {self.text}" if self.service else self.text


Events = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The listener of a caller that wants no progress (tests, library use)."""
