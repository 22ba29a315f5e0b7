"""qbctl ci setup / teardown: the CI step that gives tests a migrated database and a Redis.

It composes the three parts of qbctl (stack: up, db: migrate, checks: health), which is why it
lives at the top of the package and not inside one of them. Non-interactive: one summary with a
timing per step; the failing step's error and its exit code. Where GITHUB_ENV is set, the two
URLs are exported for later steps (written to that file, never printed).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from qbctl.checks import health
from qbctl.config.settings import Settings
from qbctl.db import migrate
from qbctl.engine.runtime import Runtime
from qbctl.errors import QbctlError
from qbctl.events import Event, Events, Status, ignore
from qbctl.result import Result
from qbctl.stack import up as up_mod
from qbctl.stack.down import DownResult
from qbctl.stack.spec import require_project
from qbctl.workflows import reset as reset_mod


@dataclass(frozen=True, kw_only=True)
class CiOptions:
    timeout: float | None = None  # seconds per step; None: QBCTL_UP_TIMEOUT
    without_timescaledb: bool = False


@dataclass
class CiResult(Result):
    project: str
    steps: list[dict] = field(default_factory=list)
    lint: list[dict] = field(default_factory=list)  # db lint's findings on the files migrate applies
    exported: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ok: bool = True
    error: QbctlError | None = None


def _step(result: CiResult, name: str, fn) -> bool:
    """Run one step; record it; on failure keep its error (and so its exit code). Whether it passed."""
    started = time.monotonic()
    try:
        out = fn()
        error = out.error if not out.ok else None
        if not out.ok and error is None:
            error = QbctlError(f"ci setup: the {name} step failed")
    except QbctlError as exc:
        error = exc
    result.steps.append({"step": name, "ok": error is None, "seconds": round(time.monotonic() - started, 3)})
    if error is not None:
        result.fail(error)
    return error is None


def setup(settings: Settings, options: CiOptions = CiOptions(), events: Events = ignore, *, rt: Runtime) -> CiResult:
    require_project(settings, "nothing was started")
    t0 = time.monotonic()
    timeout = options.timeout or settings.values.qbctl_up_timeout
    result = CiResult(settings.project)
    steps = (
        ("up", lambda: up_mod.up(settings, up_mod.UpOptions(no_ui=True, timeout=timeout), events, rt=rt)),
        ("lint", lambda: _lint(settings, result, events, rt)),
        (
            "migrate",
            lambda: migrate.migrate(
                settings,
                migrate.MigrateOptions(without_timescaledb=options.without_timescaledb, wait=timeout),
                events,
                rt=rt,
            ),
        ),
        (
            "health",
            lambda: health.check(
                settings,
                health.HealthOptions(
                    wait=True, timeout=min(timeout, 30), without_timescaledb=options.without_timescaledb
                ),
                rt=rt,
            ),
        ),
    )
    for name, fn in steps:
        events(Event(Status.INFO, f"ci: {name}"))
        if not _step(result, name, fn):
            break
    if result.ok:
        result.exported = export_github_env(settings, rt=rt)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _lint(settings: Settings, result: CiResult, events: Events, rt: Runtime):
    """db lint on the files migrate is about to apply: its findings are shown, and never fail the setup
    (the tests should still run); `qbctl db lint` as a step of its own fails the build on its errors."""
    from qbctl.db import lint_run

    try:
        linted = lint_run.lint(settings, events=events, rt=rt)
    except QbctlError as exc:  # a file migrate cannot read either: migrate's step reports it with its exit code
        events(Event(Status.INFO, f"lint: skipped: {exc.message}"))
        return lint_run.LintResult()
    result.lint = linted.findings
    for f in linted.findings:
        events(Event(Status.INFO, f"lint: {f['file']}:{f['line']}: {f['severity']} {f['rule']}: {f['message']}"))
    linted.ok, linted.error = True, None
    return linted


def export_github_env(settings: Settings, *, rt: Runtime) -> list[str]:
    path = os.environ.get("GITHUB_ENV")
    if not path:
        return []
    with Path(path).open("a", encoding="utf-8") as f:
        for key in ("DATABASE_URL", "REDIS_URL"):
            # A remote engine's host, not this runner's localhost.
            f.write(f"{key}={rt.reach.user_url(settings, key)}\n")
    return ["DATABASE_URL", "REDIS_URL"]


def teardown(settings: Settings, events: Events = ignore, *, rt: Runtime) -> DownResult:
    """Everything of this project, volumes included: a CI runner keeps nothing."""
    return reset_mod.reset(settings, events=events, rt=rt)
