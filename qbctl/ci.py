"""qbctl ci setup / teardown: the CI step that gives tests a migrated database and a Redis.

Non-interactive: up (servers only, no UIs), migrate, health; one summary with a timing
per step; the failing step's error and exit code. Where GITHUB_ENV is set, the two URLs
are exported for later steps (written to that file, never printed).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from qbctl.result import Result
from qbctl.checks import health
from qbctl.stack import lifecycle
from qbctl.db import migrate
from qbctl.errors import QbctlError
from qbctl.config.settings import Settings


@dataclass
class CiResult(Result):
    project: str
    steps: list[dict] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ok: bool = True
    error: dict | None = None
    exit_code: int = 0



def _step(result: CiResult, name: str, fn):
    started = time.monotonic()
    try:
        out = fn()
    except QbctlError as exc:
        result.steps.append({"step": name, "ok": False, "seconds": round(time.monotonic() - started, 3)})
        result.ok, result.error, result.exit_code = False, exc.to_dict(), int(exc.exit_code)
        return None
    ok = getattr(out, "ok", True)
    result.steps.append({"step": name, "ok": ok, "seconds": round(time.monotonic() - started, 3)})
    if not ok:
        result.ok, result.error, result.exit_code = False, out.error, 1
    return out


def setup(settings: Settings, timeout: float | None = None, without_timescaledb: bool = False,
          events=lambda *_: None) -> CiResult:
    t0 = time.monotonic()
    timeout = timeout or settings["QBCTL_UP_TIMEOUT"]
    result = CiResult(settings.project)
    steps = (
        ("up", lambda: lifecycle.up(settings, None, no_ui=True, timeout=timeout, events=events)),
        ("migrate", lambda: migrate.migrate(settings, without_timescaledb=without_timescaledb, wait=timeout,
                                            events=lambda kind, text: events("step", "", text))),
        ("health", lambda: health.wait(settings, timeout=min(timeout, 30))),
    )
    for name, fn in steps:
        events("step", "", f"ci: {name}")
        if _step(result, name, fn) is None or not result.ok:
            break
    if result.ok:
        result.exported = export_github_env(settings)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def export_github_env(settings: Settings) -> list[str]:
    path = os.environ.get("GITHUB_ENV")
    if not path:
        return []
    with Path(path).open("a", encoding="utf-8") as f:
        for key in ("DATABASE_URL", "REDIS_URL"):
            f.write(f"{key}={settings.raw[key]}\n")
    return ["DATABASE_URL", "REDIS_URL"]


def teardown(settings: Settings, events=lambda *_: None) -> lifecycle.DownResult:
    """Everything of this project, volumes included: a CI runner keeps nothing."""
    return lifecycle.reset(settings, events=events)
