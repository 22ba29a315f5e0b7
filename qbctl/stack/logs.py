"""qbctl logs: a service's container log, as chunks of bytes for the edge to copy out."""

from __future__ import annotations

from typing import Iterator

from qbctl.config.settings import Settings
from qbctl.engine.runtime import Runtime
from qbctl.errors import Unavailable, UsageError
from qbctl.stack.spec import SERVICES


def stream(settings: Settings, service: str, follow: bool, tail: int | None, *, rt: Runtime) -> Iterator[bytes]:
    if service not in SERVICES:
        raise UsageError(f"unknown service {service!r}", hint="choose from " + ", ".join(SERVICES))
    eng = rt.engine
    found = eng.containers(settings.project, service)
    if not found:
        raise Unavailable(
            f"{service} has no container in project {settings.project}", code="NOT_RUNNING", hint="`qbctl up` starts it"
        )
    return eng.log_stream(found[0].id, follow, tail)
