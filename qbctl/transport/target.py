"""Which engine qbctl drives, resolved exactly as the docker CLI resolves it. No Docker SDK here.

DOCKER_HOST wins; then DOCKER_CONTEXT; then `currentContext` in $DOCKER_CONFIG/config.json
(default ~/.docker). A context other than "default" is read from the context store,
$DOCKER_CONFIG/contexts/meta/<sha256(name)>/meta.json, which works whether or not config.json
exists (docker-py's ContextAPI does not). An `ssh://` endpoint is reached through the system's ssh
(qbctl.transport.ssh), which honours ~/.ssh/config: ports, keys, jump hosts, known hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import unquote, urlsplit

from qbctl.config import urls
from qbctl.errors import Unavailable

DEFAULT_SOCKET = "/var/run/docker.sock"
LOCAL_URL = f"unix://{DEFAULT_SOCKET}"


@dataclass(frozen=True)
class SshDest:
    """ssh://[user@]host[:port][/remote/socket]: what ssh is told, nothing more (no port: ~/.ssh/config's)."""

    host: str
    user: str | None = None
    port: int | None = None
    socket: str = DEFAULT_SOCKET  # the engine's socket on the remote host (a path in the URL, as Podman writes)

    def args(self) -> list[str]:
        out = []
        if self.user:
            out += ["-l", self.user]
        if self.port:
            out += ["-p", str(self.port)]
        return [*out, "--", self.host]

    def __str__(self) -> str:
        return "ssh://" + (f"{self.user}@" if self.user else "") + self.host + (f":{self.port}" if self.port else "")


@dataclass(frozen=True)
class Target:
    url: str  # the engine's URL: unix://..., tcp://..., ssh://...
    source: str  # where it came from: "DOCKER_HOST", "context vm", "the default"
    tls: dict | None = None  # a context's TLS material: {"ca": path, "cert": path, "key": path, "verify": bool}
    ssh: SshDest | None = None

    @property
    def kind(self) -> str:
        """local (a socket on this machine), ssh, or tcp."""
        if self.ssh:
            return "ssh"
        return "tcp" if self.url.startswith(("tcp://", "http://", "https://")) else "local"

    @property
    def remote(self) -> bool:
        return self.kind != "local"

    @property
    def host(self) -> str:
        """The engine's host as a person names it: 'vm', '10.0.0.5', or 'this machine'."""
        if self.ssh:
            return self.ssh.host
        if self.kind == "tcp":
            return urlsplit(self.url).hostname or self.url
        return "this machine"

    def describe(self) -> str:
        if self.source == "the default":
            return f"the local engine ({self.url})"
        return f"{self.url} ({self.source})"


def config_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("DOCKER_CONFIG"):
        return Path(environ["DOCKER_CONFIG"])
    return Path(environ.get("HOME") or Path.home()) / ".docker"


def current_context(environ: Mapping[str, str]) -> str | None:
    """DOCKER_CONTEXT, else config.json's currentContext (a missing or unreadable file: none)."""
    if environ.get("DOCKER_CONTEXT"):
        return environ["DOCKER_CONTEXT"]
    try:
        data = json.loads((config_dir(environ) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data.get("currentContext") if isinstance(data, dict) else None


def resolve(environ: Mapping[str, str] | None = None) -> Target:
    """The engine to drive; Unavailable (DOCKER_UNAVAILABLE) for a context that does not exist."""
    environ = os.environ if environ is None else environ
    host = environ.get("DOCKER_HOST", "").strip()
    if host:
        return _target(host, "DOCKER_HOST", None)
    name = current_context(environ)
    if not name or name == "default":
        return Target(LOCAL_URL, "the default")
    digest = hashlib.sha256(name.encode()).hexdigest()
    store = config_dir(environ) / "contexts"
    meta_file = store / "meta" / digest / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
        endpoint = meta["Endpoints"]["docker"]
        url = endpoint["Host"]
    except FileNotFoundError:
        raise Unavailable(
            f"Docker context {name!r} does not exist",
            code="DOCKER_UNAVAILABLE",
            hint=f"`docker context ls` lists them (the store: {store}); unset DOCKER_CONTEXT or pick another",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Unavailable(
            f"Docker context {name!r}: cannot read {meta_file}: {exc}",
            code="DOCKER_UNAVAILABLE",
            hint="`docker context inspect " + name + "` shows it; recreate it",
        ) from None
    tls_dir = store / "tls" / digest / "docker"
    tls = None
    if tls_dir.is_dir():
        files = {k: str(tls_dir / f"{k}.pem") for k in ("ca", "cert", "key") if (tls_dir / f"{k}.pem").exists()}
        tls = {**files, "verify": not endpoint.get("SkipTLSVerify", False)}
    return _target(url, f"context {name}", tls)


def parse(url: str, source: str) -> Target:
    """An engine named by a URL in a setting (`source`), as DOCKER_HOST would name it; Unavailable
    (DOCKER_UNAVAILABLE) when it is not an engine address."""
    return _target(url.strip(), source, None)


def _target(url: str, source: str, tls: dict | None) -> Target:
    if url.startswith("ssh://"):
        return Target(url, source, None, parse_ssh(url, source))
    try:
        url = urls.engine_address(url)  # the one rule of what names an engine (settings check it too)
    except ValueError:
        raise Unavailable(
            f"{source}: {url!r} is not an engine address",
            code="DOCKER_UNAVAILABLE",
            hint="use unix:///path/to/docker.sock, tcp://HOST:2376 or ssh://[USER@]HOST[:PORT]",
        ) from None
    return Target(url, source, tls if url.startswith(("tcp://", "http://", "https://")) else None)


def parse_ssh(url: str, source: str = "DOCKER_HOST") -> SshDest:
    try:
        if not url.startswith("ssh://"):
            raise ValueError(url)
        urls.engine_address(url)  # the one rule of what names an engine (settings check it too)
    except ValueError:
        raise Unavailable(
            f"{source}: {url!r} is not an ssh address",
            code="DOCKER_UNAVAILABLE",
            hint="write ssh://[USER@]HOST[:PORT][/remote/socket]; keys, jump hosts and ports may also "
            "come from ~/.ssh/config",
        ) from None
    parts = urlsplit(url)
    path = unquote(parts.path)
    return SshDest(
        parts.hostname or "",
        unquote(parts.username) if parts.username else None,
        parts.port,
        path if path not in ("", "/") else DEFAULT_SOCKET,
    )
