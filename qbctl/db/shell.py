"""qbctl db shell: psql in the postgres container of this project, or a local psql."""
from __future__ import annotations

import os
import shutil
import sys

from qbctl.errors import Unavailable
from qbctl.config.settings import Settings


def run(settings: Settings, local: bool | None) -> None:
    pg = settings.pg
    if local is not True and pg.is_local:
        container = _running_container(settings)
        if container:
            docker = shutil.which("docker")
            if docker:
                tty = ["-t"] if sys.stdin.isatty() else []  # a pipe (psql < file.sql) has no terminal
                os.execvp(docker, ["docker", "exec", "-i", *tty, container, "psql", "-U", pg.user, "-d", pg.dbname])
            if local is False:
                raise Unavailable("the docker command is not installed, so psql cannot run in the container",
                                  hint="install the Docker CLI, or use --local with a local psql")
        elif local is False:
            raise Unavailable(f"the postgres container of project {settings.project} is not running",
                              hint="`qbctl up postgres` starts it")
    psql = shutil.which("psql")
    if not psql:
        raise Unavailable("no local psql found", code="PSQL_NOT_FOUND",
                          hint="install the PostgreSQL client (apt-get install postgresql-client) or start the "
                               "stack so that the container's psql is used")
    env = dict(os.environ, PGPASSWORD=pg.password)  # never on the command line
    os.execvpe(psql, ["psql", pg.dsn().replace(f":{_quoted(pg.password)}@", "@")], env)


def _quoted(password: str) -> str:
    from urllib.parse import quote

    return quote(password, safe="")


def _running_container(settings: Settings) -> str | None:
    try:
        from qbctl.stack import engine

        client = engine.connect()
        found = client.api.containers(filters=engine.project_filter(settings.project, "postgres"))
        return found[0]["Id"] if found else None
    except Exception:  # no engine: fall back to a local psql
        return None
