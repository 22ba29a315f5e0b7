"""Errors that carry what the user needs: a message, a hint, a code and the exit code.

The exit codes are a contract (DESIGN.md): scripts and CI depend on them.
"""
from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    CHECK_FAILED = 1  # unhealthy, over budget, drift, refused migration
    USAGE = 2  # bad option, bad .env value
    UNAVAILABLE = 3  # Docker, database or Redis unreachable; port in use
    CONFIRMATION = 4  # destructive command without --yes and no terminal
    INTERRUPTED = 130


class QbctlError(Exception):
    """Base of every error qbctl reports to the user as one line (plus a hint)."""

    exit_code = Exit.CHECK_FAILED
    code = "FAILED"

    def __init__(self, message: str, hint: str | None = None, code: str | None = None, **details):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code:
            self.code = code
        self.details = details

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        out.update(self.details)
        return out


class ConfigError(QbctlError):
    exit_code = Exit.USAGE
    code = "CONFIG_INVALID"


class UsageError(QbctlError):
    exit_code = Exit.USAGE
    code = "USAGE"


class Unavailable(QbctlError):
    exit_code = Exit.UNAVAILABLE
    code = "UNAVAILABLE"


class CheckFailed(QbctlError):
    exit_code = Exit.CHECK_FAILED
    code = "CHECK_FAILED"


class ConfirmationRequired(QbctlError):
    exit_code = Exit.CONFIRMATION
    code = "CONFIRMATION_REQUIRED"
