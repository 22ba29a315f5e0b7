"""Readiness, asked of each service directly: SQL, PING, HTTP. No Docker health interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = ""
    fatal: bool = False  # retrying cannot help (wrong password, missing database)


FATAL_CODES = ("DATABASE_AUTH_FAILED", "CONFIG_INVALID")  # retrying cannot help


def postgres(settings: Settings, timeout: float = 2.0, *, rt: Runtime) -> ProbeResult:
    import psycopg

    from qbctl.db import connect
    from qbctl.errors import QbctlError

    try:
        with connect.connect(settings, timeout=timeout, rt=rt) as conn:
            conn.execute("SELECT 1")
        return ProbeResult(True, "SELECT 1")
    except QbctlError as exc:
        reason = exc.details.get("reason", exc.message)
        return ProbeResult(False, reason[:200], exc.code in FATAL_CODES or "does not exist" in reason)
    except psycopg.Error as exc:  # the server went away between the login and the query
        return ProbeResult(False, " ".join(str(exc).split())[:200] or type(exc).__name__)


def redis(settings: Settings, timeout: float = 2.0, *, rt: Runtime) -> ProbeResult:
    import redis as redis_lib

    from qbctl.db.connect import redis_client

    client = redis_client(settings, timeout, rt=rt)
    try:
        client.ping()
        return ProbeResult(True, "PING")
    except redis_lib.AuthenticationError as exc:
        return ProbeResult(False, str(exc), fatal=True)
    except (redis_lib.RedisError, OSError) as exc:
        return ProbeResult(False, str(exc)[:200] or type(exc).__name__)
    finally:
        client.close()


def http(host: str, port: int, timeout: float = 2.0, *, rt: Runtime) -> ProbeResult:
    import http.client

    host = "0.0.0.0" if host == "::" else host
    host, port = rt.reach.endpoint(host, port, host)  # a UI published on the engine's host
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        status = conn.getresponse().status
        return ProbeResult(status == 200, f"HTTP {status}")
    except ConnectionRefusedError:
        return ProbeResult(False, "connection refused")
    except TimeoutError:
        return ProbeResult(False, f"no answer within {timeout:g}s")
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(False, str(exc)[:200] or type(exc).__name__)
    finally:
        conn.close()


def probe(spec, settings: Settings, timeout: float = 2.0, *, rt: Runtime) -> ProbeResult:
    if spec.probe == "postgres":
        return postgres(settings, timeout, rt=rt)
    if spec.probe == "redis":
        return redis(settings, timeout, rt=rt)
    p = spec.ports[0]
    return http(p.host_ip, p.host, timeout, rt=rt)
