"""Readiness, asked of each service directly: SQL, PING, HTTP. No Docker health interval."""
from __future__ import annotations

from dataclasses import dataclass

from qbctl.config.settings import Settings


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = ""
    fatal: bool = False  # retrying cannot help (wrong password, missing database)


def postgres(settings: Settings, timeout: float = 2.0) -> ProbeResult:
    import psycopg

    from qbctl.db import connect as pg

    try:
        with psycopg.connect(settings.pg.dsn(host="127.0.0.1" if settings.pg.is_local else None),
                             connect_timeout=max(1, int(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1")
        return ProbeResult(True, "SELECT 1")
    except psycopg.Error as exc:
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        fatal = ("password authentication failed" in text or ("database" in text and "does not exist" in text)
                 or pg.bad_url(text))
        return ProbeResult(False, text.split("FATAL:")[-1].strip()[:200], fatal)


def redis(settings: Settings, timeout: float = 2.0) -> ProbeResult:
    import redis as redis_lib

    rd = settings.redis
    client = redis_lib.Redis(host="127.0.0.1" if rd.is_local else rd.host, port=rd.port, db=rd.db,
                             password=rd.password or None, username=rd.username or None,
                             socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
        return ProbeResult(True, "PING")
    except redis_lib.AuthenticationError as exc:
        return ProbeResult(False, str(exc), fatal=True)
    except (redis_lib.RedisError, OSError) as exc:
        return ProbeResult(False, str(exc)[:200])
    finally:
        client.close()


def http(host: str, port: int, timeout: float = 2.0) -> ProbeResult:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1" if host in ("0.0.0.0", "::") else host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        status = conn.getresponse().status
        return ProbeResult(status == 200, f"HTTP {status}")
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(False, str(exc)[:200] or type(exc).__name__)
    finally:
        conn.close()


def probe(spec, settings: Settings, timeout: float = 2.0) -> ProbeResult:
    if spec.probe == "postgres":
        return postgres(settings, timeout)
    if spec.probe == "redis":
        return redis(settings, timeout)
    p = spec.ports[0]
    return http(p.host_ip, p.host, timeout)
