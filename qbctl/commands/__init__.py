"""One module per command group: parse options, call one function, render its result."""
from __future__ import annotations

import sys

import typer

from qbctl.context import AppState
from qbctl.errors import ConfirmationRequired

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout.")


def state(ctx: typer.Context, json: bool = False) -> AppState:
    st: AppState = ctx.obj
    st.out.json = json
    return st


def finish(st: AppState, result, render) -> None:
    """Render a result object (JSON or human); when it is not ok, its error and its exit code (1 by default)."""
    if st.out.json:
        st.out.emit_json(result.to_dict())
    else:
        render(st.out, result)
    if not result.ok:
        err = getattr(result, "error", None)
        if err and not st.out.json:
            st.out.error(err["message"], err.get("hint"))
        raise typer.Exit(getattr(result, "exit_code", 0) or 1)


def confirm(st: AppState, yes: bool, question: str) -> None:
    """Go on only with --yes, or with a yes typed on a terminal; CONFIRMATION_REQUIRED otherwise."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationRequired(f"{question} needs confirmation and there is no terminal to ask",
                                   hint="pass --yes to confirm")
    if not typer.confirm(question + " Continue?", default=False, err=True):
        raise typer.Exit(1)
