"""What every command module shares: the --json option, the state, `finish` and `confirm`.

One module per command group: parse options, call one function, hand its result to `finish`.
"""

from __future__ import annotations

import sys

import typer

from qbctl.context import AppState
from qbctl.errors import CheckFailed, ConfirmationRequired

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout.")


def state(ctx: typer.Context, json: bool = False) -> AppState:
    st: AppState = ctx.obj
    st.out.json = json
    st.command = ctx.command_path.removeprefix("qbctl").strip()
    return st


def finish(st: AppState, result, view) -> None:
    """Show a result (one JSON object, or `view` for people), then its error; exit with its code."""
    if st.out.json:
        st.out.emit_json(result.to_dict())
    else:
        view(st.out, result)
        if result.error is not None:
            st.out.error(result.error)
    raise typer.Exit(result.exit_code)


def confirm(st: AppState, yes: bool, question: str) -> None:
    """Go on only with --yes, or with a yes typed on a terminal; CONFIRMATION_REQUIRED otherwise."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationRequired(
            f"{question} needs confirmation and there is no terminal to ask", hint="pass --yes to confirm"
        )
    if not typer.confirm(question + " Continue?", default=False, err=True):
        raise CheckFailed("nothing was done: not confirmed", code="NOT_CONFIRMED")
