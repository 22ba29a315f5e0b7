"""The base of every command's result: `ok`, an optional `error`, and one JSON shape."""
from __future__ import annotations

from dataclasses import asdict


class Result:
    """Mixin for result dataclasses (which declare `ok` and `error`; `exit_code` stays internal)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("exit_code", None)
        return {"ok": d.pop("ok"), **d}
