"""The root Typer app: global options, command groups, and every error turned into its exit code.

`main(argv)` runs one command in-process and returns its exit code (tests, a REPL, another
tool can drive it). Only the console script, `run()`, leaves the process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from qbctl import __version__
from qbctl.commands import ci, compose, config, db, env, health, lifecycle, snapshot
from qbctl.context import AppState
from qbctl.errors import Exit, Internal, Interrupted, QbctlError, UsageError

app = typer.Typer(
    name="qbctl",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
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
    env_file: Optional[Path] = typer.Option(
        None, "--env-file", metavar="FILE", help="Settings file [default: the project folder's .env]"
    ),
    project: Optional[str] = typer.Option(
        None,
        "--project",
        "-p",
        metavar="NAME",
        help="Project name; labels every object [default: QBCTL_PROJECT, else the project folder's name]",
    ),
    project_dir: Optional[Path] = typer.Option(
        None,
        "--project-dir",
        metavar="DIR",
        help="The project folder [default: QBCTL_PROJECT_DIR, else the "
        "nearest folder holding .env, sql/schema or a [tool.qbctl] "
        "section in pyproject.toml]",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks of unexpected errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    state: AppState = ctx.obj
    state.env_file, state.project, state.project_dir, state.verbose = env_file, project, project_dir, verbose


lifecycle.register(app)
db.register(app)
health.register(app)
ci.register(app)
config.register(app)
env.register(app)
compose.register(app)
snapshot.register(app)


def main(argv: list[str] | None = None, state: AppState | None = None) -> int:
    """Run one qbctl command; its exit code. Errors are printed here (or by the command's result)."""
    state = state or AppState()
    args = sys.argv[1:] if argv is None else argv
    try:
        return _main(args, state)
    finally:
        state.close()  # the runtime's engine and ssh tunnels, whatever ended the command


def _main(args: list[str], state: AppState) -> int:
    try:
        # Without standalone mode click returns the code of typer.Exit instead of raising it.
        returned = app(args=args, obj=state, standalone_mode=False, prog_name="qbctl")
        code = returned if isinstance(returned, int) else 0
        if code == Exit.INTERRUPTED:  # Typer turns Ctrl-C into Exit(130)
            code = state.out.fail(Interrupted(state.interrupted_message()))
        return code
    except QbctlError as exc:
        return state.out.fail(exc)
    except (KeyboardInterrupt, typer.Abort):
        return state.out.fail(Interrupted(state.interrupted_message()))
    except Exception as exc:  # click's usage errors, or a bug
        if hasattr(exc, "show") and hasattr(exc, "format_message"):  # click's (Typer's own click's) usage errors
            if state.out.json or "--json" in args:
                state.out.json = True
                return state.out.fail(UsageError(exc.format_message()))
            exc.show()
            return int(Exit.USAGE)
        from qbctl.db.connect import escaped_error

        known = escaped_error(exc, state.command or "qbctl")  # a server that went away mid-command
        if known is not None:
            return state.out.fail(known)
        if state.verbose:
            raise
        from qbctl.engine.facade import lost

        gone = lost(exc)  # the engine went away under a long command (a restore, an upgrade)
        if gone:
            return state.out.fail(gone)
        return state.out.fail(
            Internal(
                f"unexpected {type(exc).__name__}: {exc}",
                hint="run again with --verbose for the traceback, and report it",
            )
        )


def run(state: AppState | None = None) -> None:
    """Run the command line, flush, and leave (launch.leave: without tearing the interpreter down).
    `state` is launch.run's when it tried a warm `up` first (settings read once)."""
    from qbctl.launch import leave

    leave(main(state=state))
