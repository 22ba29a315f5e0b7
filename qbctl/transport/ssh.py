"""An SSH engine, reached as docker compose reaches one: through the system's ssh.

One ssh process per engine and per qbctl run, a control master in a private folder: it forwards
the remote engine's socket to a local unix socket (the Docker SDK talks to that), and later,
through the same connection, the published ports of PostgreSQL, Redis and the UIs to local ports
(`forward`). Forwarded connections are channels, not sessions, so sshd's MaxSessions (10) is never
reached whatever qbctl's own concurrency. ssh reads ~/.ssh/config (ports, keys, jump hosts,
known_hosts) as it always does; it never asks for a password or a host key (BatchMode): those
failures are one line (SSH_FAILED, exit 3).

The tunnels of a run are a `Tunnels` registry that the command's Runtime owns (through its `reach.Reach`): the
engine's connection and the db forwards take the tunnel from it, and the Runtime closes it when the command ends
(Ctrl-C included).
The ssh process runs under a tiny shell watchdog that holds a pipe from qbctl: if qbctl dies
without closing (SIGKILL), the pipe closes and the watchdog ends ssh and removes the folder.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from qbctl.errors import Unavailable
from qbctl.transport.target import SshDest

SSH_TIMEOUT = 10  # seconds ssh may take to connect and log in (ConnectTimeout covers the TCP part)
WATCHDOG = r"""
exec 3<&0 0</dev/null
ssh "$@" 3<&- &
p=$!
(read _ <&3; kill $p 2>/dev/null) &
w=$!
wait $p
rc=$?
kill $w 2>/dev/null
rm -rf "$QBCTL_SSH_DIR"
exit $rc
"""


def classify(stderr: str, dest: SshDest) -> Unavailable:
    """ssh's own words as one line with a hint. Pure."""
    text = " ".join(stderr.split())
    host = dest.host
    cases = (
        (
            (
                "Host key verification failed",
                "REMOTE HOST IDENTIFICATION HAS CHANGED",
                "No ED25519 host key is known",
                "No RSA host key is known",
                "host key is known",
            ),
            f"ssh to {host}: the host key is not known (or has changed), and qbctl does not accept keys by itself",
            f"check the key and accept it once with `ssh {host}` (it goes into ~/.ssh/known_hosts)",
        ),
        (
            ("Permission denied",),
            f"ssh to {host}: the login was refused ({_quote(text, 'Permission denied')})",
            "qbctl logs in with your ssh keys (ssh-agent, IdentityFile in ~/.ssh/config) and never asks for a "
            f"password; check `ssh {host} true` works without a prompt",
        ),
        (
            ("Could not resolve hostname", "Name or service not known", "nodename nor servname"),
            f"ssh to {host}: unknown host",
            "check the name in DOCKER_HOST or the context, or add a Host entry to ~/.ssh/config",
        ),
        (
            ("Connection refused",),
            f"ssh to {host}: connection refused",
            "is sshd running there, on that port (Port in ~/.ssh/config)?",
        ),
        (
            ("timed out", "No route to host", "Network is unreachable"),
            f"ssh to {host}: no answer ({_quote(text, 'timed out', 'No route', 'unreachable')})",
            "check the address and the network (VPN, firewall)",
        ),
    )
    for needles, message, hint in cases:
        if any(n in text for n in needles):
            return Unavailable(message, hint=hint, code="SSH_FAILED")
    return Unavailable(
        f"ssh to {host} failed: {text[-300:] or 'no reason given'}",
        code="SSH_FAILED",
        hint=f"`ssh {host} true` shows what ssh says",
    )


def _quote(text: str, *needles: str) -> str:
    for n in needles:
        at = text.find(n)
        if at >= 0:
            return text[at : at + 120].split(". ")[0].rstrip(".")
    return text[:120]


class Tunnel:
    """One ssh control master to `dest`: the engine's socket as a local socket, ports on demand."""

    def __init__(self, dest: SshDest, timeout: float = SSH_TIMEOUT) -> None:
        self.dest = dest
        self.timeout = timeout
        # 0700: the sockets in it are ours alone. A unix socket's path has ~100 bytes at most.
        base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= 60 else "/tmp"
        self.folder = tempfile.mkdtemp(prefix="qbctl-ssh-", dir=base)
        self.control = os.path.join(self.folder, "ctl")
        self.docker_socket = os.path.join(self.folder, "docker.sock")
        self._proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._forwards: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def _base(self) -> list[str]:
        return [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ControlPath={self.control}",
            "-o",
            f"ConnectTimeout={int(self.timeout)}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
        ]

    def open(self) -> None:
        args = [
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=no",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "StreamLocalBindUnlink=yes",
            *self._base(),
            "-N",
            "-L",
            f"{self.docker_socket}:{self.dest.socket}",
            *self.dest.args(),
        ]
        env = dict(os.environ, QBCTL_SSH_DIR=self.folder)
        self._proc = subprocess.Popen(
            ["sh", "-c", WATCHDOG, "qbctl-ssh", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )  # Ctrl-C reaches qbctl, which closes it
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self.timeout + 5
        while not (os.path.exists(self.docker_socket) and os.path.exists(self.control)):
            if self._proc.poll() is not None:
                self._proc.wait()
                time.sleep(0.05)  # the drain thread's last lines
                raise classify("\n".join(self._stderr), self.dest)
            if time.monotonic() > deadline:
                self.close()
                raise Unavailable(
                    f"ssh to {self.dest.host}: not connected within {self.timeout + 5:g}s",
                    code="SSH_FAILED",
                    hint=f"`ssh {self.dest.host} true` shows what ssh says",
                )
            time.sleep(0.01)

    def _drain(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None  # started with stderr=PIPE before this thread
        for raw in iter(proc.stderr.readline, b""):
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def recent_errors(self) -> str:
        return "\n".join(self._stderr)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ended(self, within: float = 0.0) -> bool:
        """Whether ssh has ended, or does within `within` seconds (a dropped connection takes it a moment)."""
        deadline = time.monotonic() + within
        while self.alive:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _mux(self, *args: str, timeout: float = 10, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", *self._base(), *args, *self.dest.args()],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def forward(self, host: str, port: int) -> tuple[str, int]:
        """A local address whose connections reach host:port as seen from the engine's host."""
        with self._lock:
            if (host, port) in self._forwards:
                return "127.0.0.1", self._forwards[(host, port)]
            err = ""
            for _ in range(3):
                local = _free_port()
                proc = self._mux("-O", "forward", "-L", f"127.0.0.1:{local}:{host}:{port}")
                if proc.returncode == 0:
                    self._forwards[(host, port)] = local
                    return "127.0.0.1", local
                err = (proc.stderr or "").strip()
                if not self.alive:
                    break
        raise Unavailable(
            f"ssh to {self.dest.host}: cannot forward port {port}: {err[:200] or 'ssh ended'}",
            code="SSH_FAILED",
            hint="the ssh server may not allow TCP forwarding (AllowTcpForwarding)",
        )

    def listening(self, host: str, port: int, wait: float = 1.0) -> bool | None:
        """Whether something accepts connections on host:port of the engine's host; None: cannot tell."""
        cmd = ["ssh", *self._base(), "-W", f"{host}:{port}", *self.dest.args()]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return True  # connected, and the other end keeps the connection open
        if proc.returncode == 0:
            return True  # connected; the other end closed after our EOF
        text = err.decode("utf-8", "replace")
        if "refused" in text or "open failed" in text or "forwarding request failed" in text:
            return False
        return None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None  # started with stdin=PIPE
                proc.stdin.close()  # the watchdog ends ssh
                proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tunnels:
    """The ssh connections of one run, one per destination: the engine's connection and the db forwards share it.

    A Runtime owns one (through its Reach) and closes it when the command ends."""

    def __init__(self) -> None:
        self._tunnels: dict[SshDest, Tunnel] = {}
        self._failed: dict[SshDest, Unavailable] = {}
        self._lock = threading.Lock()

    def tunnel(self, dest: SshDest) -> Tunnel:
        """The open tunnel to dest (opened once per run); the same error again if it could not be opened."""
        with self._lock:
            if dest in self._failed:
                raise self._failed[dest]
            t = self._tunnels.get(dest)
            if t is not None and t.alive:
                return t
            if shutil.which("ssh") is None:
                err = Unavailable(
                    f"{dest} needs the ssh command, which is not installed",
                    code="SSH_FAILED",
                    hint="install OpenSSH's client (apt-get install openssh-client)",
                )
                self._failed[dest] = err
                raise err
            t = Tunnel(dest)
            try:
                t.open()
            except Unavailable as exc:
                self._failed[dest] = exc
                raise
            self._tunnels[dest] = t
            return t

    def destinations(self) -> list[SshDest]:
        """Where this registry holds a tunnel, or remembers one that could not be opened."""
        with self._lock:
            return [*self._tunnels, *(d for d in self._failed if d not in self._tunnels)]

    def close(self) -> None:
        """Close every tunnel and forget the failures (a next run tries again). Safe to call twice."""
        with self._lock:
            for t in self._tunnels.values():
                t.close()
            self._tunnels.clear()
            self._failed.clear()
