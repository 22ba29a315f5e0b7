"""Where the services are, and how this process reaches them.

"Local" means "on the engine qbctl drives": a URL naming localhost (config.urls.LOCAL_HOSTS) is a
service qbctl runs, published on the engine's host. With a local engine that is this machine.
With an ssh engine it is the VM: qbctl reaches a published port through its own ssh connection
(a forward to a local port, opened on first use and closed when the command ends), so `up`'s
readiness probes, `health`, `db migrate`, `budget --load` all talk to the VM's PostgreSQL and
Redis. With a tcp:// engine the engine's host is connected to directly (its ports must be
published where this machine can reach them).

A `Reach` is one run's view of this: the engine target it resolved (per DOCKER_* environment) and the ssh
tunnels it opened (`ssh.Tunnels`). The command's Runtime owns one (`rt.reach`) and closes it when the command
ends; the warm `up` path, which runs before the Runtime exists, makes and closes its own. Nothing here is
module-level state: two Runtimes share no target and no tunnel.

Cheap for a local engine: it reads the environment and, at most, ~/.docker/config.json.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from qbctl.config.urls import LOCAL_HOSTS, connect_host
from qbctl.transport import target as target_mod

if TYPE_CHECKING:
    from qbctl.transport.ssh import Tunnels


def remote_ip(bind: str) -> str:
    """The address on the engine's host that a port published on `bind` answers on."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "", "localhost") else bind


class Reach:
    """The engine target a run resolved and the ssh tunnels it opened; `close` ends both. Thread-safe."""

    def __init__(self) -> None:
        self._cache: dict[tuple, target_mod.Target] = {}
        self._tunnels: Tunnels | None = None  # made on first use: a local engine never imports ssh
        self._lock = threading.Lock()

    @property
    def tunnels(self) -> Tunnels:
        """This run's ssh tunnels, one per destination (the engine's connection and the db forwards share it)."""
        with self._lock:
            if self._tunnels is None:
                from qbctl.transport.ssh import Tunnels

                self._tunnels = Tunnels()
            return self._tunnels

    def current(self) -> target_mod.Target:
        """The engine this run drives (resolved once per DOCKER_* environment)."""
        key = tuple(os.environ.get(k) for k in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "HOME"))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = target_mod.resolve()
            return self._cache[key]

    def targets(self) -> list[target_mod.Target]:
        """The targets this run resolved so far."""
        with self._lock:
            return list(self._cache.values())

    def resolved_ssh(self) -> bool:
        """Whether this run resolved an ssh engine."""
        return any(t.kind == "ssh" for t in self.targets())

    def forget(self) -> None:
        """Forget the resolved targets (a next use resolves again)."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Close this run's ssh tunnels and forget its targets. Safe to call twice."""
        with self._lock:
            tunnels = self._tunnels
        if tunnels is not None:
            tunnels.close()
        self.forget()

    def __enter__(self) -> Reach:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def engine_is_remote(self) -> bool:
        try:
            return self.current().remote
        except Exception:  # noqa: BLE001 - a bad context is reported by whatever connects to the engine
            return False

    def endpoint(self, host: str, port: int, bind: str = "127.0.0.1") -> tuple[str, int]:
        """The (host, port) this process connects to for a URL's host:port.

        A non-local host is used as it is. A local one is on the engine's host: this machine, the
        engine's tcp host, or through the ssh engine's tunnel (SSH_FAILED, exit 3, when it cannot open)."""
        if host not in LOCAL_HOSTS:
            return host, port
        tgt = self.current()
        if tgt.kind == "local":
            return connect_host(host), port
        if tgt.kind == "tcp":
            return tgt.host, port
        assert tgt.ssh is not None  # neither local nor tcp: an ssh engine
        # The engine's own tunnel (one ssh connection per run for everything), opened here if the
        # command has not needed the engine itself (db migrate).
        return self.tunnels.tunnel(tgt.ssh).forward(remote_ip(bind), port)

    def url_host(self, host: str) -> str:
        """The host a person uses in DATABASE_URL / REDIS_URL: the engine's host for a local URL."""
        if host not in LOCAL_HOSTS:
            return host
        tgt = self.current()
        return host if tgt.kind == "local" else tgt.host

    def user_url(self, settings, key: str) -> str:
        """DATABASE_URL or REDIS_URL as the backend next to the engine, or a person, would use it: as
        written for a local engine; with the engine's host for a remote one (what qbctl itself reaches
        through its tunnel, others reach there or through their own `ssh -L`)."""
        raw = settings.raw[key]
        url = settings.pg if key == "DATABASE_URL" else settings.redis
        host = self.url_host(url.host)
        if host == url.host:
            return raw
        if key == "DATABASE_URL":
            return url.dsn(host=host)
        from urllib.parse import quote

        user, password = quote(url.username, safe=""), quote(url.password, safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        return f"redis://{auth}{host}:{url.port}/{url.db}"
