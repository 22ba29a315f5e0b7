"""The base of every command's result: `ok`, an optional typed `error`, one JSON shape.

The exit code is derived from the error: 0 when there is none, else the error's own.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from enum import Enum

from qbctl.errors import QbctlError


def plain(value: object) -> object:
    """A value as JSON can hold it: dataclasses as dicts, errors as their dict, enums as values."""
    if isinstance(value, QbctlError):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


class Result:
    """Mixin for result dataclasses, which declare `ok: bool` and `error: QbctlError | None` as fields
    (the annotations here only type them: a plain class adds no dataclass fields)."""

    ok: bool
    error: QbctlError | None

    def to_dict(self) -> dict:
        d = plain(self)
        assert isinstance(d, dict)  # a dataclass's fields
        return {"ok": d.pop("ok"), **d}

    def fail(self, error: QbctlError | None) -> None:
        """Not ok, for `error` (None: failed with no error of its own; exit code 1)."""
        self.ok, self.error = False, error

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return int(self.error.exit_code)
        return 0 if self.ok else 1
