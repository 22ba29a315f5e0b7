"""A VM on this machine, for the remote-engine tests and the benchmark.

- The "VM": this machine's root network namespace, its Docker engine, and a real OpenSSH server
  the lab starts (its own config, a port of its own, key login with a throwaway key, only root
  allowed, MaxSessions at its default), listening on loopback and on the lab's veth address.
- The "laptop": a network namespace of its own (a veth pair into the root namespace), where
  127.0.0.1 is not the engine's host. Commands run there in a mount namespace too, where the
  engine's local socket is hidden (/dev/null over it) and root's home is the lab's folder (a
  passwd file bound over /etc/passwd: ssh finds ~/.ssh from passwd, not $HOME), so ssh reads the
  lab's ~/.ssh/config, key and known_hosts, and nothing of this machine's own.
- Latency: the kernel here has no netem, so a relay in the root namespace delays every chunk by
  `delay` seconds in each direction on the ssh path (`Host enginevm-slow` in ~/.ssh/config).
  Its loops are bounded by the lab's lifetime; it only ever talks to the lab's sshd on loopback.
- Docker contexts in $DOCKER_CONFIG/contexts, written as `docker context create` writes them, and
  no config.json (the case docker-py's ContextAPI cannot read).

Everything is removed by `close()`: the namespace, the veth, the sshd, the relay, the folder.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def available() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a bind mount over /etc/passwd)"
    for tool in (SSHD, "ssh", "ssh-keygen", "ip", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install openssh-server openssh-client iproute2 util-linux)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _children(parent: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(entry))
    return out


class Relay:
    """host:port -> target, each chunk delivered `delay` seconds after it arrived, both ways."""

    def __init__(self, host: str, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.server = socket.create_server((host, 0))
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)  # an idle ssh connection is no end of it
                self.sockets.append(sock)
            for a, b in ((client, upstream), (upstream, client)):
                a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._pipe(a, b)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        queue: list = []
        cond = threading.Condition()
        seq = [0]

        def reader() -> None:
            while not self.stop.is_set():
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                with cond:
                    seq[0] += 1
                    heapq.heappush(queue, (time.monotonic() + self.delay, seq[0], data))
                    cond.notify()
                if not data:
                    return

        def writer() -> None:
            while not self.stop.is_set():
                with cond:
                    while not queue and not self.stop.is_set():
                        cond.wait(0.2)
                    if not queue:
                        continue
                    due, _, data = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        cond.wait(wait)
                        continue
                    heapq.heappop(queue)
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        for sock in self.sockets:  # before the lab's addresses go: sshd must see them end
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class EngineRelay:
    """The laptop's own engine, for a "laptop" in the lab's namespace: this machine's engine socket offered
    as tcp://<the lab's veth address>:<port> (the laptop cannot see the socket itself, and what the engine
    publishes on that address it can reach). Counts the bytes sent to the engine and the requests that
    create a container, so a test can tell what was made through it."""

    def __init__(self, host: str, socket_path: str = "/var/run/docker.sock") -> None:
        self.path = socket_path
        self.server = socket.create_server((host, 0))
        self.url = f"tcp://{host}:{self.server.getsockname()[1]}"
        self.stop = threading.Event()
        self.sent = 0  # bytes from the laptop to the engine
        self.requests: list[str] = []  # "POST /v1.4x/containers/create?name=..." lines seen
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(self.path)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            if up and data:
                with self.lock:
                    self.sent += len(data)
                    for line in data.split(b"\r\n"):
                        if line.startswith((b"POST ", b"DELETE ")) and b" HTTP/1." in line:
                            self.requests.append(line.decode("latin-1").rsplit(" HTTP/", 1)[0])
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass


class Lab:
    def __init__(self, delay: float = 0.025) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qbctl-sshlab-"))
        self.dir.chmod(0o755)
        tag = f"{random.randrange(16**6):06x}"
        self.ns, self.veth = f"qbl{tag}", f"qbl{tag}"
        octet = random.randrange(2, 250)
        self.host_ip, self.ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.delay = delay
        self.sshd: subprocess.Popen | None = None
        self.relay: Relay | None = None
        self._netns = False
        self.home = self.dir / "home"
        self.docker_config = self.dir / "docker"

    # --- setup ---------------------------------------------------------------------------------
    def start(self) -> Lab:
        try:
            self._keys()
            self._network()
            self._sshd()
            self.relay = Relay(self.host_ip, (self.host_ip, self.sshd_port), self.delay)
            self._client_files()
        except Exception:
            self.close()
            raise
        return self

    def _run(self, *cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def _keys(self) -> None:
        for name in ("hostkey", "client", "stranger"):
            self._run(
                "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"qbctl-lab-{name}", "-f", str(self.dir / name)
            )
        keys = self.dir / "authorized"
        keys.mkdir()
        (keys / "root").write_text((self.dir / "client.pub").read_text())

    def _network(self) -> None:
        self._run("ip", "netns", "add", self.ns)
        self._netns = True
        self._run("ip", "link", "add", self.veth + "a", "type", "veth", "peer", "name", self.veth + "b")
        self._run("ip", "link", "set", self.veth + "b", "netns", self.ns)
        self._run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.veth + "a")
        self._run("ip", "link", "set", self.veth + "a", "up")
        for cmd in (
            ("addr", "add", f"{self.ns_ip}/30", "dev", self.veth + "b"),
            ("link", "set", self.veth + "b", "up"),
            ("link", "set", "lo", "up"),
        ):
            self._run("ip", "netns", "exec", self.ns, "ip", *cmd)

    def _sshd(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder (Debian)
        self.sshd_port = free_port()
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.sshd_port}",
                    "ListenAddress 127.0.0.1",
                    f"ListenAddress {self.host_ip}",
                    f"HostKey {self.dir / 'hostkey'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized'}/%u",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "LogLevel VERBOSE",
                    "AllowUsers root",  # MaxSessions left at its default (10)
                ]
            )
            + "\n"
        )
        self._run(SSHD, "-t", "-f", str(config))
        self.sshd = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(self.dir / "sshd.log")])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host_ip, self.sshd_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.sshd.poll() is not None:
                    raise RuntimeError("sshd did not start: " + (self.dir / "sshd.log").read_text()[-500:]) from None
                time.sleep(0.05)

    def _client_files(self) -> None:
        ssh = self.home / ".ssh"
        ssh.mkdir(parents=True)
        ssh.chmod(0o700)
        shutil.copy(self.dir / "client", ssh / "id_lab")
        (ssh / "id_lab").chmod(0o600)
        host_key = " ".join((self.dir / "hostkey.pub").read_text().split()[:2])
        (ssh / "known_hosts").write_text(
            f"[{self.host_ip}]:{self.sshd_port} {host_key}\n[{self.host_ip}]:{self.relay.port} {host_key}\n"
        )
        (ssh / "config").write_text(
            f"Host enginevm\n  HostName {self.host_ip}\n  Port {self.sshd_port}\n  User root\n"
            f"  IdentityFile ~/.ssh/id_lab\n  IdentitiesOnly yes\n\n"
            f"Host enginevm-slow\n  HostName {self.host_ip}\n  Port {self.relay.port}\n  User root\n"
            f"  IdentityFile ~/.ssh/id_lab\n  IdentitiesOnly yes\n\n"
            f"Host unknownkey\n  HostName {self.host_ip}\n  Port {self.sshd_port}\n  User root\n"
            f"  IdentityFile ~/.ssh/id_lab\n  UserKnownHostsFile /dev/null\n\n"
            f"Host stranger\n  HostName {self.host_ip}\n  Port {self.sshd_port}\n  User root\n"
            f"  IdentityFile {self.dir / 'stranger'}\n  IdentitiesOnly yes\n"
        )
        passwd = []
        for line in Path("/etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == "root":
                f[5] = str(self.home)
            passwd.append(":".join(f))
        (self.dir / "passwd").write_text("\n".join(passwd) + "\n")
        for name, host in (("vm", "ssh://enginevm"), ("vm-slow", "ssh://enginevm-slow")):
            meta = self.docker_config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
            meta.mkdir(parents=True)
            (meta / "meta.json").write_text(
                json.dumps(
                    {
                        "Name": name,
                        "Metadata": {"Description": "qbctl lab"},
                        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
                    }
                )
            )

    # --- use -----------------------------------------------------------------------------------
    def env(self, base: dict[str, str], host: str | None = "ssh://enginevm", context: str | None = None) -> dict:
        env = {k: v for k, v in base.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT", "SSH_AUTH_SOCK")}
        tmp = self.dir / "tmp"  # where qbctl's tunnel folders go: the tests check none is left behind
        tmp.mkdir(exist_ok=True)
        env.update({"HOME": str(self.home), "DOCKER_CONFIG": str(self.docker_config), "TMPDIR": str(tmp)})
        if host:
            env["DOCKER_HOST"] = host
        if context:
            env["DOCKER_CONTEXT"] = context
        return env

    def wrap(self, argv: list[str], apart: bool = True) -> list[str]:
        """argv run on the "laptop": its own network namespace, the engine's socket hidden. `apart=False`:
        a laptop that is also the engine's host (this machine's network and engine socket; only ssh's
        files are the lab's), where a second engine of its own is this machine's."""
        hide = (
            (
                "{ [ ! -e /var/run/docker.sock ] || mount --bind /dev/null /var/run/docker.sock; } && "
                f'exec ip netns exec {self.ns} "$@"'
            )
            if apart
            else 'exec "$@"'
        )
        script = f"mount --bind {self.dir / 'passwd'} /etc/passwd && " + hide
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "lab", *argv]

    def listen_in_namespace(self, port: int) -> subprocess.Popen:
        """A listener on the laptop's 127.0.0.1:port (a port busy only on the client)."""
        code = (
            "import socket, sys, time; s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); "
            "print('up', flush=True); time.sleep(600)"
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "python3", "-c", code, str(port)], stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()
        return proc

    def close(self) -> None:
        if self.relay:
            self.relay.close()
        if self.sshd and self.sshd.poll() is None:
            # The sessions first (sshd's children): a connection whose client went with the namespace
            # would otherwise stay open on this side.
            for pid in _children(self.sshd.pid):
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
            self.sshd.terminate()
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
        if self._netns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth + "a"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
