"""Where the services are, and how this process reaches them.

"Local" means "on the engine qbctl drives": a URL naming localhost (config.urls.LOCAL_HOSTS) is a
service qbctl runs, published on the engine's host. With a local engine that is this machine.
With an ssh engine it is the VM: qbctl reaches a published port through its own ssh connection
(a forward to a local port, opened on first use and closed when the command ends), so `up`'s
readiness probes, `health`, `db migrate`, `budget --load` all talk to the VM's PostgreSQL and
Redis. With a tcp:// engine the engine's host is connected to directly (its ports must be
published where this machine can reach them).

Cheap for a local engine: it reads the environment and, at most, ~/.docker/config.json.
"""

from __future__ import annotations

import os
import threading

from qbctl.config.urls import LOCAL_HOSTS, connect_host
from qbctl.transport import target as target_mod

_cache: dict[tuple, target_mod.Target] = {}
_lock = threading.Lock()


def current() -> target_mod.Target:
    """The engine this run drives (resolved once per DOCKER_* environment)."""
    key = tuple(os.environ.get(k) for k in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "HOME"))
    with _lock:
        if key not in _cache:
            _cache[key] = target_mod.resolve()
        return _cache[key]


def resolved_ssh() -> bool:
    """Whether this run resolved an ssh engine (whose tunnel the runtime then closes)."""
    with _lock:
        return any(t.kind == "ssh" for t in _cache.values())


def forget() -> None:
    """Forget the resolved targets (the runtime's close: a next command in this process resolves again)."""
    with _lock:
        _cache.clear()


def engine_is_remote() -> bool:
    try:
        return current().remote
    except Exception:  # noqa: BLE001 - a bad context is reported by whatever connects to the engine
        return False


def remote_ip(bind: str) -> str:
    """The address on the engine's host that a port published on `bind` answers on."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "", "localhost") else bind


def endpoint(host: str, port: int, bind: str = "127.0.0.1") -> tuple[str, int]:
    """The (host, port) this process connects to for a URL's host:port.

    A non-local host is used as it is. A local one is on the engine's host: this machine, the
    engine's tcp host, or through the ssh engine's tunnel (SSH_FAILED, exit 3, when it cannot open)."""
    if host not in LOCAL_HOSTS:
        return host, port
    tgt = current()
    if tgt.kind == "local":
        return connect_host(host), port
    if tgt.kind == "tcp":
        return tgt.host, port
    from qbctl.transport import ssh

    assert tgt.ssh is not None  # neither local nor tcp: an ssh engine
    # The engine's own tunnel (one ssh connection per run for everything), opened here if the
    # command has not needed the engine itself (db migrate).
    return ssh.tunnel(tgt.ssh).forward(remote_ip(bind), port)


def url_host(host: str) -> str:
    """The host a person uses in DATABASE_URL / REDIS_URL: the engine's host for a local URL."""
    if host not in LOCAL_HOSTS:
        return host
    tgt = current()
    return host if tgt.kind == "local" else tgt.host


def user_url(settings, key: str) -> str:
    """DATABASE_URL or REDIS_URL as the backend next to the engine, or a person, would use it: as
    written for a local engine; with the engine's host for a remote one (what qbctl itself reaches
    through its tunnel, others reach there or through their own `ssh -L`)."""
    raw = settings.raw[key]
    url = settings.pg if key == "DATABASE_URL" else settings.redis
    host = url_host(url.host)
    if host == url.host:
        return raw
    if key == "DATABASE_URL":
        return url.dsn(host=host)
    from urllib.parse import quote

    user, password = quote(url.username, safe=""), quote(url.password, safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"redis://{auth}{host}:{url.port}/{url.db}"
