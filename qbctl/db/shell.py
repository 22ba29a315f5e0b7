"""qbctl db shell: psql in the postgres container of this project, or a local psql.

Arguments after `--` go to psql as they are (`qbctl db shell -- -c "select 1"`). The password
never appears on a command line: the container's psql logs in over its local socket, a local
psql gets it through PGPASSWORD.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qbctl.config.settings import Settings
from qbctl.db.connect import dbname
from qbctl.errors import Unavailable

if TYPE_CHECKING:
    from qbctl.engine.runtime import Runtime

PSQL_CONNECTION_BAD = 2  # psql's exit status when it could not connect


@dataclass(frozen=True)
class ShellRun:
    argv: list[str]
    env: dict[str, str] | None
    where: str  # "container X" or "local psql"


def plan(settings: Settings, local: bool | None, args: list[str], tty: bool, *, rt: Runtime) -> ShellRun:
    """Which psql to run, with which arguments."""
    pg = settings.pg
    if local is not True and pg.is_local:
        container = _running_container(settings, rt)
        if container:
            docker = shutil.which("docker")
            if docker:
                flags = ["-i", "-t"] if tty else ["-i"]
                return ShellRun(
                    [docker, "exec", *flags, container, "psql", "-U", pg.user, "-d", dbname(pg.dbname), *args],
                    None,
                    f"the postgres container of project {settings.project}",
                )
            if local is False:
                raise Unavailable(
                    "the docker command is not installed, so psql cannot run in the container",
                    code="PSQL_NOT_FOUND",
                    hint="install the Docker CLI, or use --local with a local psql",
                )
        elif local is False:
            raise Unavailable(
                f"the postgres container of project {settings.project} is not running",
                code="NOT_RUNNING",
                hint="`qbctl up postgres` starts it",
            )
    psql = shutil.which("psql")
    if not psql:
        raise Unavailable(
            "no local psql found, and no running postgres container to use",
            code="PSQL_NOT_FOUND",
            hint="`qbctl up postgres` starts the stack, whose psql is then used; or install the "
            "PostgreSQL client (apt-get install postgresql-client)",
        )
    env = dict(os.environ, PGPASSWORD=pg.password)  # never on the command line
    host, port = rt.reach.endpoint(
        pg.host, pg.port, settings.values.qbctl_bind_address
    )  # a remote engine's: through ssh
    url = pg.dsn(host=host, port=port, password=False)
    return ShellRun([psql, url, *args], env, "local psql")


def run(shell: ShellRun) -> int:
    """Run psql with the terminal; Ctrl-C belongs to psql while it runs. Its exit status."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(shell.argv, env=shell.env)
    except OSError as exc:
        raise Unavailable(f"cannot run {shell.argv[0]}: {exc.strerror}", code="PSQL_NOT_FOUND") from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _running_container(settings: Settings, rt: Runtime) -> str | None:
    try:
        found = rt.engine.containers(settings.project, "postgres", running_only=True)
        return found[0].id if found else None
    except Exception:  # noqa: BLE001 - no engine: a local psql is the way
        return None
