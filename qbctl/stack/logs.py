"""qbctl logs: a service's container log, copied to stdout as it comes."""
from __future__ import annotations

import sys

from qbctl.stack import engine
from qbctl.errors import QbctlError, UsageError
from qbctl.config.settings import Settings
from qbctl.stack.spec import SERVICES


def stream(settings: Settings, service: str, follow: bool, tail: int | None) -> None:
    if service not in SERVICES:
        raise UsageError(f"unknown service {service!r}", hint="choose from " + ", ".join(SERVICES))
    client = engine.connect()
    found = client.api.containers(all=True, filters=engine.project_filter(settings.project, service))
    if not found:
        raise QbctlError(f"{service} has no container in project {settings.project}", code="NOT_RUNNING",
                         hint="`qbctl up` starts it")
    chunks = client.api.logs(found[0]["Id"], stream=True, follow=follow, tail=tail if tail is not None else "all")
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
        if follow:
            out.flush()
    out.flush()
