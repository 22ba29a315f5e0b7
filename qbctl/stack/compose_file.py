"""compose/docker-compose.dev.yml rendered from the same Stack that `up` runs.

Same images, commands, ports (on the bind address), memory limits and volumes, so
`docker compose up` gives the identical stack. The host ports and the passwords are compose
variables with the settings' values as defaults (PORT_VARIABLES), so that
`QB_POSTGRES_PORT=15432 ... docker compose -p other up` runs a second stack beside the first.
A password is never written, except the public default of DATABASE_URL (qb_pass) as the
default of POSTGRES_PASSWORD; another one must come from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qbctl.config.settings import Settings
from qbctl.config.sizes import MB
from qbctl.errors import CheckFailed, QbctlError
from qbctl.result import Result
from qbctl.stack.spec import Stack, build_stack

HEADER = """\
# Rendered by `qbctl compose render` from qbctl's settings: do not edit by hand.
# `qbctl compose render --check` fails when this file is out of date.
# Usage: docker compose -f compose/docker-compose.dev.yml up -d --wait
# Variables (defaults below): POSTGRES_PASSWORD, QB_POSTGRES_PORT, QB_REDIS_PORT, QB_ADMINER_PORT,
# QB_REDIS_COMMANDER_PORT. A second stack: QB_POSTGRES_PORT=15432 QB_REDIS_PORT=16379 QB_ADMINER_PORT=18080
#   QB_REDIS_COMMANDER_PORT=18081 docker compose -p other -f compose/docker-compose.dev.yml up -d --wait
"""
PORT_VARIABLES = {
    "postgres": "QB_POSTGRES_PORT",
    "redis": "QB_REDIS_PORT",
    "adminer": "QB_ADMINER_PORT",
    "redis-commander": "QB_REDIS_COMMANDER_PORT",
}
REDIS_PASSWORD = "${REDIS_PASSWORD:?set REDIS_PASSWORD to the password in REDIS_URL}"


def to_yaml(data: dict) -> str:
    """YAML from PyYAML's safe dumper: a string that YAML would read as something else
    (Null, NO, True, 1e3, 0x1F) is quoted; sequences indented under their key, keys in order."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=10**6, allow_unicode=True)


def _hc(test: tuple[str, ...]) -> dict:
    return {"test": list(test), "interval": "1s", "timeout": "3s", "retries": 60}


def _postgres_password(password: str) -> str:
    from qbctl.config.settings import BY_KEY
    from qbctl.config.urls import parse_pg_url

    if password == parse_pg_url(BY_KEY["DATABASE_URL"].default).password:
        return "${POSTGRES_PASSWORD:-" + password + "}"
    return "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD to the password in DATABASE_URL}"


def document(stack: Stack, pg_password: str = "", redis_password: str = "") -> dict:
    services = {}

    def hide(value: str) -> str:
        """The Redis password, as an argument or at the end of REDIS_HOSTS, becomes a variable."""
        if redis_password and value == redis_password:
            return REDIS_PASSWORD
        if redis_password and value.endswith(":" + redis_password):
            return value[: -len(redis_password)] + REDIS_PASSWORD
        return value

    for s in stack.services:
        env = {k: _postgres_password(pg_password) if k == "POSTGRES_PASSWORD" else hide(v) for k, v in s.environment}
        svc: dict = {"image": s.image}
        if s.command:
            svc["command"] = [hide(a) for a in s.command]
        if env:
            svc["environment"] = env
        svc["ports"] = [f"{p.host_ip}:${{{PORT_VARIABLES[s.name]}:-{p.host}}}:{p.container}" for p in s.ports]
        if s.volumes:
            svc["volumes"] = [f"{v.removeprefix(stack.project + '_')}:{path}" for v, path in s.volumes]
        svc["mem_limit"] = f"{s.mem_limit // MB}m"
        svc["memswap_limit"] = f"{s.mem_limit // MB}m"
        if s.cpu_shares:
            svc["cpu_shares"] = s.cpu_shares
        if s.stop_signal:
            svc["stop_signal"] = s.stop_signal
        if s.healthcheck:
            svc["healthcheck"] = _hc(s.healthcheck)
        if s.depends_on:
            svc["depends_on"] = {d: {"condition": "service_healthy"} for d in s.depends_on}
        svc["restart"] = s.restart
        services[s.name] = svc
    # No project name or labels: compose names its project itself, and the file must not
    # depend on the folder it is rendered in. qbctl's commands do not act on its objects.
    return {"services": services, "volumes": {v.removeprefix(stack.project + "_"): {} for v in stack.volumes()}}


def render(settings: Settings) -> str:
    return HEADER + to_yaml(document(build_stack(settings), settings.pg.password, settings.redis.password))


def target(settings: Settings) -> Path:
    return settings.root / "compose" / "docker-compose.dev.yml"


@dataclass
class ComposeResult(Result):
    path: str
    written: bool = False
    ok: bool = True
    error: QbctlError | None = None


def write(settings: Settings, check: bool) -> ComposeResult:
    """Write the file, or with check compare it (DRIFT when it differs)."""
    path = target(settings)
    text = render(settings)
    current = path.read_text() if path.exists() else None
    result = ComposeResult(str(path))
    if check:
        if current != text:
            state = "is missing" if current is None else "is out of date"
            result.fail(
                CheckFailed(
                    f"{path} {state}: it no longer matches qbctl's stack",
                    code="DRIFT",
                    hint="run `qbctl compose render` and commit the result",
                )
            )
        return result
    if current != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        result.written = True
    return result
