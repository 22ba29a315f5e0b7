"""Host ports, checked before anything is created, and who holds a busy one."""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING

from qbctl.errors import Unavailable
from qbctl.stack.spec import Port

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime


def is_free(host_ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: connections in TIME_WAIT do not count; a listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def in_use_on_engine(eng, host_ip: str, port: int, *, rt: Runtime) -> bool | None:
    """Whether host_ip:port is taken on the engine's host; None: cannot tell from here (a tcp engine)."""
    from qbctl.transport import reach

    tgt = rt.reach.current()
    if tgt.kind == "local":
        return not is_free(host_ip, port)
    if tgt.kind == "tcp":
        return None
    return eng.tunnel.listening(reach.remote_ip(host_ip), port, wait=eng.allow(1.0))


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":  # 0A = LISTEN
                        inodes.add(cols[9])
        except OSError:
            continue
    return inodes


def holder(port: int) -> str | None:
    """'redis-server (pid 123)' for a local listener, when /proc lets us see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    with open(f"/proc/{pid}/comm") as f:
                        return f"{f.read().strip()} (pid {pid})"
        except OSError:
            continue
    return None


def check_free(ports: list[tuple[str, Port]], who_else=None, in_use=None, host: str | None = None) -> None:
    """Raise PORT_IN_USE for the first busy port: which port, who holds it, which setting moves it.

    who_else(port) -> (description, ours) names a container that publishes the port; a port held
    by this project's own container (one an interrupted run already started) is no conflict.
    in_use(host_ip, port) -> bool | None asks the engine's host (None: cannot tell; the engine's own
    refusal to publish is then the answer); `host` names a remote engine's host, whose processes
    cannot be named from here.
    """
    for service, p in ports:
        busy = in_use(p.host_ip, p.host) if in_use else not is_free(p.host_ip, p.host)
        if not busy:
            continue
        by, ours = who_else(p.host) if who_else else (None, False)
        if ours:
            continue
        by = by or (holder(p.host) if host is None else "a process there (not a container)")
        by_text = f" by {by}" if by else ""
        on = f"{p.host_ip} of {host}" if host else p.host_ip
        raise Unavailable(
            f"port {p.host} on {on} is in use{by_text}; {service} needs it",
            code="PORT_IN_USE",
            hint=f"stop what holds it, or move {service} to a free port with {p.setting}"
            + (" (the port in the URL)" if p.setting.endswith("_URL") else ""),
            port=p.host,
            setting=p.setting,
            service=service,
        )
