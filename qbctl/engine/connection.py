"""Reaching the Docker engine, and its failures in words.

`open_api` connects (DOCKER_HOST, the Docker context, an ssh engine's tunnel); `engine_call` wraps every
engine call that can fail, so that a lost connection or a refusal is one error in words (DOCKER_UNAVAILABLE,
SSH_FAILED or ENGINE_ERROR, exit 3), never a raw SDK exception; `lost` names an engine gone mid-command.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from qbctl.errors import QbctlError, Unavailable
from qbctl.transport import target

CONNECT_TIMEOUT = 2  # seconds: an unreachable engine is reported well within 2 s
API_TIMEOUT = 120

if TYPE_CHECKING:
    from qbctl.engine.facade import Engine
    from qbctl.transport.ssh import Tunnels


def open_api(tgt: target.Target, tunnels: Tunnels):
    """The SDK's low-level client of the engine, the ssh tunnel it goes through (or None), and the measured
    round trip (0 for a local engine); DOCKER_UNAVAILABLE (exit 3) when it cannot be reached. An ssh engine's
    tunnel is taken from `tunnels`, the run's registry (the Runtime's reach), which the db forwards share."""
    import docker
    import requests
    from docker.errors import DockerException

    where = tgt.describe()
    tunnel = None
    try:
        if tgt.ssh:
            from qbctl.transport import ssh

            tunnel = tunnels.tunnel(tgt.ssh)
            client = docker.DockerClient(
                base_url=f"unix://{tunnel.docker_socket}", version="auto", timeout=CONNECT_TIMEOUT + ssh.SSH_TIMEOUT
            )
        elif tgt.source in ("DOCKER_HOST", "the default"):
            client = docker.from_env(version="auto", timeout=CONNECT_TIMEOUT)  # DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
        else:
            tls: bool | docker.TLSConfig = False
            if tgt.tls:
                from docker.tls import TLSConfig

                cert = (tgt.tls["cert"], tgt.tls["key"]) if "cert" in tgt.tls and "key" in tgt.tls else None
                tls = TLSConfig(client_cert=cert, ca_cert=tgt.tls.get("ca"), verify=tgt.tls["verify"])
            client = docker.DockerClient(base_url=tgt.url, tls=tls, version="auto", timeout=CONNECT_TIMEOUT)
    except (DockerException, OSError, requests.RequestException) as exc:
        reason = reason_of(exc)
        if tunnel is not None and tgt.ssh is not None:
            reason = tunnel_reason(tunnel, tgt.ssh.socket) or reason
        raise Unavailable(
            f"cannot reach the Docker engine at {where}: {reason}",
            code="DOCKER_UNAVAILABLE",
            hint="is the Docker daemon running? Start it, or point DOCKER_HOST / DOCKER_CONTEXT at a running engine",
        ) from None
    client.api.timeout = API_TIMEOUT
    rtt = 0.0
    if tgt.remote:
        rtt = min(_ping_time(client.api) for _ in range(2))
    return client.api, tunnel, rtt


def _ping_time(api) -> float:
    started = time.perf_counter()
    api.ping()
    return time.perf_counter() - started


def tunnel_reason(tunnel, socket_path: str) -> str | None:
    """What the ssh master said about the engine's socket, in words."""
    text = tunnel.recent_errors()
    if "administratively prohibited" in text:
        return "the ssh server does not allow forwarding a socket (AllowStreamLocalForwarding / DisableForwarding)"
    if "open failed" in text or "connect failed" in text:
        return f"no engine socket at {socket_path} there that this ssh user may open (is the user in the docker group?)"
    if not tunnel.alive:
        return "the ssh connection ended: " + (text.strip().splitlines() or ["no reason given"])[-1][:200]
    return None


def reason_of(exc: Exception) -> str:
    text = str(exc)
    for needle, reason in (
        ("FileNotFoundError", "no socket there"),
        ("Connection refused", "connection refused"),
        ("Permission denied", "permission denied (are you in the docker group?)"),
        ("timed out", "no answer within 2s"),
        ("Name or service not known", "unknown host"),
        ("RemoteDisconnected", "the connection was closed"),
        ("Connection aborted", "the connection was closed"),
    ):
        if needle in text:
            return reason
    return text[:200]


def lost(exc: BaseException) -> QbctlError | None:
    """An engine that went away in the middle of a command (restarted, its socket gone) as the error it
    is (DOCKER_UNAVAILABLE, exit 3), not a bug; None for anything else."""
    import requests
    from docker.errors import DockerException

    if isinstance(exc, (requests.exceptions.ConnectionError, DockerException)):
        return Unavailable(
            f"the Docker engine stopped answering in the middle of the command: {reason_of(exc)}",
            code="DOCKER_UNAVAILABLE",
            hint="was it restarted? Once `docker info` answers, run the command again: each one "
            "finishes or puts back what it started",
        )
    return None


def failure(eng: Engine, what: str, exc: Exception) -> QbctlError:
    """An engine call's exception in words: a refusal (ENGINE_ERROR), a lost ssh connection (SSH_FAILED), a
    lost engine (DOCKER_UNAVAILABLE); exit 3."""
    from docker.errors import APIError

    if isinstance(exc, APIError):
        text = str(getattr(exc, "explanation", None) or exc)
        return Unavailable(
            f"the engine at {eng.where} refused {what}: {text[:300]}",
            code="ENGINE_ERROR",
            hint="`docker info` / `docker ps -a` on that engine show its state",
        )
    if eng.tunnel is not None and eng.tunnel.ended(within=0.5):
        return Unavailable(
            f"the ssh connection to {eng.host} was lost while {what}",
            code="SSH_FAILED",
            hint="run the command again; `ssh " + eng.host + " true` shows what ssh says",
        )
    return Unavailable(
        f"lost the Docker engine at {eng.where} while {what}: {reason_of(exc)}",
        code="DOCKER_UNAVAILABLE",
        hint="is the Docker daemon running? `docker info` tells",
    )


def engine_call(what: str):
    """An engine call that can fail: a lost connection or a refusal becomes one error in words
    (DOCKER_UNAVAILABLE, SSH_FAILED or ENGINE_ERROR, exit 3), never a raw SDK exception."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            import requests
            from docker.errors import DockerException

            try:
                return fn(self, *args, **kwargs)
            except (DockerException, OSError, requests.RequestException) as exc:
                raise self.failure(what, exc) from None

        return call

    return wrap
