"""What `up` is asked and what it answers: its options, its result, where the services are.

Apart from stack/up.py (which imports the engine) so that a warm `up` (stack/warm.py) builds the
same result without loading what it does not use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qbctl.config.settings import Settings
from qbctl.errors import QbctlError
from qbctl.result import Result
from qbctl.stack.spec import ServiceSpec


@dataclass(frozen=True, kw_only=True)
class UpOptions:
    services: tuple[str, ...] = ()  # empty: all
    no_ui: bool = False
    timeout: float | None = None  # None: QBCTL_UP_TIMEOUT
    profile: str | None = None  # None: QBCTL_PROFILE


@dataclass
class ServiceResult:
    name: str
    image: str
    ports: list[str]
    action: str = "keep"
    ready: bool = False
    seconds: float | None = None
    detail: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    logs: list[str] = field(default_factory=list)


@dataclass
class UpResult(Result):
    project: str
    services: list[ServiceResult]
    plan: str
    timings: dict[str, float]
    external: list[dict]
    urls: dict[str, str] = field(default_factory=dict)  # where things are: the two URLs (masked), the UIs
    next: list[str] = field(default_factory=list)  # the commands a user runs next
    ok: bool = False
    error: QbctlError | None = None
    engine: dict = field(default_factory=dict)  # where the stack runs: {"url", "host", "remote", "product", ...}


NEXT_COMMANDS = ["qbctl db migrate", "qbctl db seed", "qbctl status", "qbctl down"]


def urls(settings: Settings, ready: list[ServiceSpec]) -> dict[str, str]:
    """Where each ready service is: DATABASE_URL and REDIS_URL (masked), the UIs' addresses, Adminer's
    with a login prefilled for this stack (PostgreSQL, server `postgres`, the URL's user and database)."""
    from urllib.parse import urlencode

    out = {"DATABASE_URL": settings.pg.masked(), "REDIS_URL": settings.redis.masked()}
    for spec in ready:
        if not spec.ui:
            continue
        p = spec.ports[0]
        host = "127.0.0.1" if p.host_ip in ("0.0.0.0", "::") else p.host_ip
        base = f"http://{f'[{host}]' if ':' in host else host}:{p.host}/"
        if spec.name == "adminer":
            base += "?" + urlencode({"pgsql": "postgres", "username": settings.pg.user, "db": settings.pg.dbname})
        out[spec.name] = base
    return out
