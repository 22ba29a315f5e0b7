"""The console script's first step: a warm `qbctl up` answered before Typer and the commands load.

`qbctl up` on a stack that already runs as asked does nothing, and is run often (scripts, CI, a
Makefile's every target), so it should cost what `docker compose up -d` costs on a running stack.
Loading Typer, click and every command module takes ~40 ms of that; here, for the plain forms only
(`up [SERVICE...] [--no-ui] [--json]`, no global option), stack/warm.py is asked first with the same
AppState the CLI would build. Whatever it cannot answer (anything to do, anything unusual, another
form of the command) goes on to `cli.run` with that state, so that settings are read, and their
warnings said, once.
"""

from __future__ import annotations

import os
import sys

SERVICES = ("postgres", "redis", "adminer", "redis-commander")  # spec.SERVICES, without importing it
FLAGS = ("--no-ui", "--json")


def quick_form(argv: list[str]) -> bool:
    """Whether argv is a plain `up` this launcher may answer: anything else is Typer's to parse."""
    return bool(argv) and argv[0] == "up" and all(a in FLAGS or a in SERVICES for a in argv[1:])


def warm_up(argv: list[str], state) -> int | None:
    """The exit code of a warm `up` answered here, or None: the CLI runs it."""
    from qbctl.errors import Interrupted

    out = state.out
    out.json = "--json" in argv
    state.command = "up"
    state.on_interrupt = "nothing was created or changed"
    try:
        settings = state.settings
        from qbctl.stack import warm
        from qbctl.stack.up_result import UpOptions

        quick = warm.up(
            settings, UpOptions(services=tuple(a for a in argv[1:] if a in SERVICES), no_ui="--no-ui" in argv)
        )
    except KeyboardInterrupt:
        return out.fail(Interrupted(state.interrupted_message()))
    except Exception:  # noqa: BLE001 - a QbctlError or a bug: the CLI runs it and says it in its words
        return None
    if quick is None:
        return None
    result, said = quick
    if said:
        with out.progress("starting the stack") as events:
            for event in said:
                events(event)
    if out.json:
        out.emit_json(result.to_dict())
    else:
        from qbctl import views

        views.up(out, result)
    return result.exit_code


def leave(code: int) -> None:
    """Flush, and leave without tearing the interpreter down.

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


def run() -> None:
    """The console script."""
    argv = sys.argv[1:]
    state = None
    if quick_form(argv):
        from qbctl.context import AppState

        state = AppState()
        code = warm_up(argv, state)
        if code is not None:
            leave(code)
    from qbctl.cli import run as run_cli

    run_cli(state)
