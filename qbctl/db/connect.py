"""Connections to the two data stores, made in one place each, and their errors in words.

- `connect()`: psycopg to DATABASE_URL, waiting for a server that is still starting.
- `redis_client()`: redis-py to REDIS_URL, user and password included.
- `Rows`: the tiny interface (`rows(sql)` -> text rows) that both psycopg and qbctl.db.libpq
  serve, so that code reading the catalog is written once.
A URL naming localhost means the engine's host (the command's `rt.reach.endpoint`, transport/reach.py: this
machine, or through the ssh engine's tunnel of that run); any other host is used as it is. So every function that
connects takes the command's Runtime (`rt=`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from qbctl.config.settings import Settings
from qbctl.errors import ConfigError, QbctlError, ServerKilled, Unavailable

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

RETRYABLE = (
    "starting up",
    "Connection refused",
    "connection refused",
    "server closed the connection",
    "shutting down",
    "No such file",
    "timeout expired",
    "could not receive data",
    "Connection reset",
    "in recovery mode",
)
KILLED = (
    "terminating connection because of crash of another server process",
    "server closed the connection unexpectedly",
    "the database system is in recovery mode",
)

# psycopg logs a COPY that a lost connection ended ("error ignored terminating <psycopg.Copy>") besides
# raising; with no handler of its own, Python would print that on stderr before qbctl's one line.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

Rows = Callable[[str], list[tuple]]  # rows(sql) -> every row, every value text or None


def dsn(
    settings: Settings,
    dbname: str | None = None,
    local_port: int | None = None,
    local_host: str = "127.0.0.1",
    *,
    rt: Runtime,
) -> str:
    """DATABASE_URL for libpq, with the host and port to connect to (rt.reach.endpoint); `dbname`:
    another database of the same server; `local_port`: another server, on that port of `local_host` (a
    rehearsal's copy, in a container of the local engine), with the same credentials."""
    pg = settings.pg
    if local_port is not None:
        return pg.dsn(host=local_host, port=local_port, dbname=dbname)
    host, port = rt.reach.endpoint(pg.host, pg.port, settings.values.qbctl_bind_address)
    return pg.dsn(host=host, port=port, dbname=dbname)


def dbname(db: str) -> str:
    """A database for `-d` of psql, pg_dump and pg_restore, as a connection string: a bare name that
    holds `=` (or starts with postgresql://) would be read as one."""
    return "dbname='" + db.replace("\\", "\\\\").replace("'", "\\'") + "'"


def bad_url(text: str) -> bool:
    """Whether libpq refused DATABASE_URL itself (an unknown parameter or a bad value after ?)."""
    return "invalid URI query parameter" in text or ("invalid" in text and "value:" in text)


def url_error(text: str, where: str = "") -> ConfigError:
    """libpq's refusal of DATABASE_URL (see bad_url) as the settings error it is (exit 2)."""
    reason = text.split("FATAL:")[-1].strip().removeprefix("connection is bad: ")[:300]
    return ConfigError(
        f"DATABASE_URL{f' ({where})' if where else ''}: {reason}",
        hint="the parameters after ? go to libpq as they are (sslmode=require, connect_timeout=10, ...)",
    )


def auth_error(message: str) -> Unavailable:
    """A refused login (exit 3, whichever command meets it)."""
    return Unavailable(
        message,
        code="DATABASE_AUTH_FAILED",
        hint="check the password in DATABASE_URL; a stack's data volume keeps the password it was "
        "created with: put the old one back, or `qbctl reset` to start from an empty volume "
        "(deletes its data)",
    )


def connect(
    settings: Settings,
    wait: float = 0.0,
    autocommit: bool = True,
    timeout: float = 3,
    prepared: bool = True,
    events=None,
    dbname: str | None = None,
    local_port: int | None = None,
    local_host: str = "127.0.0.1",
    *,
    rt: Runtime,
):
    """A psycopg connection with the URL's credentials; retried while the server is starting.

    client_encoding is UTF8 whatever the database's encoding: on a SQL_ASCII database the
    driver would otherwise hand back bytes where the catalog holds text. `prepared=False` turns
    off the driver's prepared statements (a session that runs DISCARD ALL drops them under it).
    With `events`, a wait is said once (a `waiting` event), so that a stopped stack is not 30 s
    of silence.
    """
    import psycopg

    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            return _psycopg(dsn(settings, dbname, local_port, local_host, rt=rt), timeout, autocommit, prepared)
        except psycopg.Error as exc:
            text = " ".join(str(exc).split())
            if any(r in text for r in RETRYABLE) and time.monotonic() < deadline:
                if events is not None and not told and wait >= 2:
                    from qbctl.events import Event, Status

                    reason = _unreachable(settings, text).details["reason"]
                    events(
                        Event(
                            Status.WAITING,
                            f"waiting up to {wait:.0f}s for {settings.pg.masked()} ({reason}); "
                            "`qbctl up postgres` starts the stack's",
                            "postgres",
                        )
                    )
                    told = True
                time.sleep(0.1)
                continue
            raise _unreachable(settings, text) from None


def _psycopg(url: str, timeout: float, autocommit: bool = True, prepared: bool = True):
    import psycopg

    return psycopg.connect(
        url,
        connect_timeout=max(1, int(timeout)),
        autocommit=autocommit,
        application_name="qbctl",
        client_encoding="UTF8",
        prepare_threshold=5 if prepared else None,
    )


def connect_url(url: str, timeout: float = 5):
    """A psycopg connection (autocommit) to a URL as a test holds it: a clone of the pytest plugin's."""
    import re

    import psycopg

    try:
        return _psycopg(url, timeout)
    except psycopg.Error as exc:
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url.split("?", 1)[0])
        reason = " ".join(str(exc).split()).split("FATAL:")[-1].strip()[:300]
        raise Unavailable(f"cannot connect to {shown}: {reason}", code="DATABASE_UNAVAILABLE") from None


def psycopg_rows(conn) -> Rows:
    """`rows(sql)` over a psycopg connection; the SQL must return text columns (cast with ::text)."""
    return lambda sql: conn.execute(sql).fetchall()


def _unreachable(settings: Settings, text: str) -> QbctlError:
    where = settings.pg.masked()
    reason = text.split("FATAL:")[-1].strip()[:300]
    if "Connection refused" in text:  # libpq's two lines of it, for each address it tried
        reason = "connection refused"
    elif "timeout expired" in text:
        reason = "no answer within the timeout"
    err: QbctlError
    if bad_url(text):
        err = url_error(text, where)
    elif "password authentication failed" in text:
        err = auth_error(f"PostgreSQL refused the login of {settings.pg.user} at {where}: {reason}")
    elif "does not exist" in text:
        err = Unavailable(
            f"{where}: {reason}",
            code="DATABASE_UNAVAILABLE",
            hint="create the database, or fix its name in DATABASE_URL",
        )
    else:
        err = Unavailable(
            f"cannot reach PostgreSQL at {where}: {reason}",
            code="DATABASE_UNAVAILABLE",
            hint="`qbctl up` starts it; or point DATABASE_URL at a running server",
        )
    err.details["reason"] = reason  # the server's own words, for a caller that reports them itself
    return err


def killed_error(exc: Exception, doing: str) -> QbctlError | None:
    """A server process killed under us (OOM, as a rule), as the error it is; None for anything else
    (a server shut down by its administrator, `qbctl down`, is no kill)."""
    text = " ".join(str(exc).split())
    if not any(k in text for k in KILLED) or "administrator command" in text:
        return None
    return ServerKilled(
        f"postgres: the server process running {doing} was killed ({text[:160]})",
        hint="the kernel kills a PostgreSQL backend when the container reaches its memory limit: "
        "`qbctl health` names the kill, `qbctl budget` shows the arithmetic and the setting "
        "that fixes it (QBCTL_BUDGET_POSTGRES, POSTGRES_WORK_MEM, POSTGRES_MAX_CONNECTIONS)",
    )


def escaped_error(exc: Exception, doing: str) -> QbctlError | None:
    """A driver's error that escaped a command (the server went away in the middle of it) as the
    error it is: SERVER_KILLED, DATABASE_UNAVAILABLE or REDIS_UNAVAILABLE (exit 3); None when
    `exc` is no PostgreSQL or Redis error (then it is a bug)."""
    module = type(exc).__module__ or ""
    text = " ".join(str(exc).split())[:300]
    if module.startswith("psycopg"):
        import psycopg

        killed = killed_error(exc, doing)
        if killed is not None:
            return killed
        if isinstance(exc, psycopg.OperationalError):
            return Unavailable(
                f"postgres: the connection was lost while running {doing}: {text}",
                code="DATABASE_UNAVAILABLE",
                hint="`qbctl status` shows whether the server runs; `qbctl logs postgres` says why it stopped",
            )
        return None
    if module.startswith("redis"):
        import redis

        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return Unavailable(
                f"redis: the connection was lost while running {doing}: {text}",
                code="REDIS_UNAVAILABLE",
                hint="`qbctl status` shows whether Redis runs; `qbctl logs redis` says why it stopped",
            )
    return None


def server_error(exc, text: str = "", line: int = 1) -> tuple[int | None, str, dict]:
    """A server error as psql shows it: (line, 'SQLSTATE message' and its DETAIL/HINT/CONTEXT lines, fields).

    `text` is the SQL that was sent, which starts at `line` of its file: the error's position in it,
    when the server gives one (parse errors), makes the line exact; else it is the statement's line,
    or None without a statement. fields: sqlstate, detail, server_hint, context, for --json.
    """
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None) or "?????"
    message = (getattr(diag, "message_primary", None) or str(exc)).strip()
    pos = getattr(diag, "statement_position", None)
    at = None
    if text:
        at = line + (text[: int(pos) - 1].count("\n") if pos else 0)
    fields = {"sqlstate": sqlstate}
    lines = [f"{sqlstate} {message}"]
    for label, key, attr in (
        ("DETAIL", "detail", "message_detail"),
        ("HINT", "server_hint", "message_hint"),
        ("QUERY", "query", "internal_query"),
        ("CONTEXT", "context", "context"),
    ):
        value = getattr(diag, attr, None)
        if value:
            fields[key] = value.strip()
            lines.append(f"{label}: {value.strip()}")
    return at, "\n".join(lines), fields


def redis_client(settings: Settings, timeout: float = 2.0, name: str | None = None, *, rt: Runtime):
    """A redis-py client for REDIS_URL: its user, password and database, the stack's host. With
    `name`, one connection only, with that client name (CLIENT LIST shows it: the pytest plugin's
    claims on databases).

    No retries: redis-py's default (3, with backoff) turned a refused connection into 4 s of
    silence, which health reported as "no answer"; callers that wait (up's probe) retry themselves."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    rd = settings.redis
    host, port = rt.reach.endpoint(rd.host, rd.port, settings.values.qbctl_bind_address)
    return redis.Redis(
        host=host,
        port=port,
        db=rd.db,
        username=rd.username or None,
        password=rd.password or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
        single_connection_client=name is not None,
    )


def redis_error(exc: Exception, settings: Settings) -> str:
    """A Redis connection error in words: `cannot reach Redis at URL: connection refused`."""
    text = " ".join(str(exc).split())
    reason = (
        "connection refused"
        if "refused" in text.lower()
        else (
            "no answer within the timeout" if "timeout" in text.lower() or "timed out" in text.lower() else text[:200]
        )
    )
    return f"cannot reach Redis at {settings.redis.masked()}: {reason}"
