"""PostgreSQL connections: wait for a server that is still starting, and readable errors."""
from __future__ import annotations

import time

from qbctl.errors import ConfigError, QbctlError, Unavailable
from qbctl.config.settings import Settings

RETRYABLE = ("starting up", "Connection refused", "connection refused", "server closed the connection",
             "shutting down", "No such file", "timeout expired", "could not receive data", "Connection reset")


def dsn(settings: Settings) -> str:
    """DATABASE_URL for libpq; localhost as 127.0.0.1 (the published port listens on IPv4)."""
    pg = settings.pg
    return pg.dsn(host="127.0.0.1" if pg.host == "localhost" else None)


def bad_url(text: str) -> bool:
    """Whether libpq refused DATABASE_URL itself (an unknown parameter or a bad value after ?)."""
    return "invalid URI query parameter" in text or ("invalid" in text and "value:" in text)


def url_error(text: str, where: str = "") -> ConfigError:
    """libpq's refusal of DATABASE_URL (see bad_url) as the settings error it is (exit 2)."""
    reason = text.split("FATAL:")[-1].strip().removeprefix("connection is bad: ")[:300]
    return ConfigError(f"DATABASE_URL{f' ({where})' if where else ''}: {reason}",
                       hint="the parameters after ? go to libpq as they are (sslmode=require, connect_timeout=10, ...)")


def connect(settings: Settings, wait: float = 0.0, autocommit: bool = True):
    """A psycopg connection with the URL's credentials; retried while the server is starting."""
    import psycopg

    deadline = time.monotonic() + wait
    while True:
        try:
            return psycopg.connect(dsn(settings), connect_timeout=3, autocommit=autocommit,
                                   application_name="qbctl")
        except psycopg.Error as exc:
            text = " ".join(str(exc).split())
            if any(r in text for r in RETRYABLE) and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise _unreachable(settings, text) from None


def _unreachable(settings: Settings, text: str) -> QbctlError:
    where = settings.pg.masked()
    reason = text.split("FATAL:")[-1].strip()[:300]
    if bad_url(text):
        return url_error(text, where)
    if "password authentication failed" in text:
        return Unavailable(f"PostgreSQL refused the login of {settings.pg.user} at {where}: {reason}",
                           code="DATABASE_AUTH_FAILED",
                           hint="check the password in DATABASE_URL (a stack's volume keeps the password "
                                "it was created with)")
    if "does not exist" in text:
        return Unavailable(f"{where}: {reason}", code="DATABASE_UNAVAILABLE",
                           hint="create the database, or fix its name in DATABASE_URL")
    return Unavailable(f"cannot reach PostgreSQL at {where}: {reason}", code="DATABASE_UNAVAILABLE",
                       hint="`qbctl up` starts it; or point DATABASE_URL at a running server")


def error_position(text: str, exc) -> tuple[int | None, str]:
    """(line, 'SQLSTATE message') of a server error in `text`, from its character position."""
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None) or "?????"
    message = (getattr(diag, "message_primary", None) or str(exc)).strip()
    line = None
    pos = getattr(diag, "statement_position", None)
    if pos:
        line = text[: int(pos) - 1].count("\n") + 1
    detail = getattr(diag, "message_detail", None)
    hint = getattr(diag, "message_hint", None)
    extra = "".join(f" ({x})" for x in (detail, hint) if x)
    return line, f"{sqlstate} {message}{extra}"
