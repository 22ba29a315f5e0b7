"""A container's log: its last lines (evidence in a report), or the stream `qbctl logs` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbctl.engine.connection import engine_call

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine


def tail(eng: Engine, container_id: str, lines: int = 20, since: int | None = None) -> list[str]:
    try:
        kw = {"since": since} if since else {}
        raw = eng.api.logs(container_id, stdout=True, stderr=True, tail=lines, **kw)
    except Exception:  # noqa: BLE001 - logs are evidence, never a reason to fail the report itself
        return []
    return raw.decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:]


@engine_call("reading a log")
def stream(eng: Engine, container_id: str, follow: bool, tail: int | None):
    """The log as chunks of bytes, as they come; a connection lost on the way is an error in words."""
    raw = eng.api.logs(container_id, stream=True, follow=follow, tail=tail if tail is not None else "all")

    def chunks():
        try:
            yield from raw
        except Exception as exc:  # noqa: BLE001 - the stream's errors come from several layers
            raise eng.failure("reading a log", exc) from None

    return chunks()
