"""The root Typer app: global options, command groups, and errors turned into exit codes."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from qbctl import __version__
from qbctl.commands import ci, compose, config, db, env, health, lifecycle
from qbctl.context import AppState
from qbctl.errors import Exit, QbctlError

app = typer.Typer(
    name="qbctl", no_args_is_help=True, add_completion=True, rich_markup_mode=None,
    help="Run and check the QB trading backend's data stack: PostgreSQL + TimescaleDB, Redis and their UIs.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"qbctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    env_file: Optional[Path] = typer.Option(None, "--env-file", help="Settings file [default: ./.env]"),
    project: Optional[str] = typer.Option(None, "--project", "-p",
                                          help="Project name; labels every object [default: the folder's name]"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks of unexpected errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    state: AppState = ctx.obj
    state.env_file, state.project, state.verbose = env_file, project, verbose


lifecycle.register(app)
db.register(app)
health.register(app)
ci.register(app)
config.register(app)
env.register(app)
compose.register(app)


def main(argv: list[str] | None = None) -> None:
    state = AppState()
    try:
        # Without standalone mode click returns the code of typer.Exit instead of raising it.
        returned = app(args=argv, obj=state, standalone_mode=False, prog_name="qbctl")
        code = returned if isinstance(returned, int) else 0
        if code == Exit.INTERRUPTED:  # Typer turns Ctrl-C into Exit(130)
            state.out.note("interrupted: nothing was removed; the stack is left as it was")
    except QbctlError as exc:
        code = report(state, exc)
    except (KeyboardInterrupt, typer.Abort):
        state.out.note("interrupted: nothing was removed; the stack is left as it was")
        code = Exit.INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback only with --verbose
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's (or Typer's own click's) usage errors
            exc.show()
            if "--json" in (argv if argv is not None else sys.argv[1:]):
                state.out.emit_json({"ok": False, "error": {"code": "USAGE", "message": exc.format_message()}})
            _exit(Exit.USAGE)
        if state.verbose:
            raise
        state.out.error(f"unexpected {type(exc).__name__}: {exc}",
                        "run again with --verbose for the traceback, and report it")
        code = 70
    _exit(code)


def _exit(code: int) -> None:
    """Flush and leave without tearing the interpreter down.

    Unloading psycopg, OpenSSL and the Docker SDK's session took 25-40 ms of every run (bench/)
    and does nothing a finished command needs: connections are closed, files written through
    context managers, and the only threads left are daemons (a health check that never answered).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (qbctl ... | head): nothing more to say
            pass
    os._exit(int(code))


def report(state: AppState, exc: QbctlError) -> int:
    if state.out.json:
        state.out.emit_json({"ok": False, "error": exc.to_dict()})
    else:
        state.out.error(exc.message, exc.hint)
    return int(exc.exit_code)
