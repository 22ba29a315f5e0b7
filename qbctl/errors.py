"""Every error qbctl reports: a message, a hint, a code and the exit code, in one hierarchy.

The exit codes are a contract: scripts and CI depend on them. One cause has one exit code
whichever command meets it. A result carries one of these as its `error`; a failure that
stops a command is raised as one; `commands.finish` and `cli.main` are the only places that
print them.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    CHECK_FAILED = 1  # unhealthy, over budget, drift, a refused or failed migration
    USAGE = 2  # bad option, bad setting
    UNAVAILABLE = 3  # Docker, database, Redis, an image unreachable; a port in use
    CONFIRMATION = 4  # destructive command without --yes and no terminal
    INTERNAL = 70  # a bug in qbctl (EX_SOFTWARE): one line, the traceback with --verbose
    INTERRUPTED = 130  # Ctrl-C


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


# --- by exit code ------------------------------------------------------------------------------
class CheckFailed(QbctlError):
    """Exit 1: the answer is no (unhealthy, over budget, drift, a migration refused or failed)."""

    exit_code = Exit.CHECK_FAILED
    code = "CHECK_FAILED"


class ConfigError(QbctlError):
    """Exit 2: a setting or a file qbctl reads is wrong."""

    exit_code = Exit.USAGE
    code = "CONFIG_INVALID"


class UsageError(QbctlError):
    """Exit 2: the command line is wrong."""

    exit_code = Exit.USAGE
    code = "USAGE"


class Unavailable(QbctlError):
    """Exit 3: something needed cannot be reached or used (engine, server, image, port, tool)."""

    exit_code = Exit.UNAVAILABLE
    code = "UNAVAILABLE"


class ConfirmationRequired(QbctlError):
    exit_code = Exit.CONFIRMATION
    code = "CONFIRMATION_REQUIRED"


class Interrupted(QbctlError):
    exit_code = Exit.INTERRUPTED
    code = "INTERRUPTED"


class Internal(QbctlError):
    """Exit 70: a bug. Its message names the exception; --verbose shows the traceback."""

    exit_code = Exit.INTERNAL
    code = "INTERNAL"


# --- the causes other code catches by class ----------------------------------------------------
class NotOwned(CheckFailed):
    """A name qbctl would use belongs to an object it did not create: never a takeover."""

    code = "NAME_CONFLICT"


class VolumeIncompatible(CheckFailed):
    code = "VOLUME_INCOMPATIBLE"


class MigrationFailed(CheckFailed):
    code = "MIGRATION_FAILED"


class TimescaleMissing(Unavailable):
    code = "TIMESCALEDB_UNAVAILABLE"


class NotAProject(UsageError):
    """A command that changes containers, run in a folder that is no qbctl project."""

    code = "NOT_A_PROJECT"


class ServerKilled(Unavailable):
    """A server process was killed under a command (by the kernel's OOM killer, as a rule)."""

    code = "SERVER_KILLED"


class SnapshotDamaged(CheckFailed):
    """A snapshot whose files are missing, cut short or changed since it was taken."""

    code = "SNAPSHOT_DAMAGED"


class NoSpace(Unavailable):
    """A disk (the host's for snapshots, the engine's for a restore) has not enough free space."""

    code = "NO_SPACE"


class RehearsalFailed(CheckFailed):
    """`db migrate --rehearse`: a file failed on the throwaway copy (the real database was not touched)."""

    code = "REHEARSAL_FAILED"
