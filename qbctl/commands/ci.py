"""qbctl ci setup / teardown."""

from __future__ import annotations

from typing import Optional

import typer

from qbctl.commands.base import JSON_OPTION, finish, state

ci_app = typer.Typer(help="The CI step: a migrated database and a Redis for the tests.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(ci_app, name="ci")


@ci_app.command()
def setup(
    ctx: typer.Context,
    timeout: Optional[float] = typer.Option(
        None, "--timeout", min=0.1, metavar="SECONDS", help="Seconds per step to be ready."
    ),
    without_timescaledb: bool = typer.Option(
        False, "--without-timescaledb", help="Apply the plain schema on a server without TimescaleDB."
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Start postgres and redis (no UIs), migrate, check health; export the URLs to GITHUB_ENV."""
    from qbctl import views
    from qbctl.workflows import ci

    st = state(ctx, json)
    st.on_interrupt = (
        "ci setup stopped; what it started keeps running: `qbctl ci teardown` removes it, "
        "`qbctl ci setup` again finishes the job"
    )
    options = ci.CiOptions(timeout=timeout, without_timescaledb=without_timescaledb)
    with st.out.progress("ci setup") as events:
        result = ci.setup(st.settings, options, events, rt=st.rt)
    finish(st, result, views.ci)


@ci_app.command()
def teardown(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Remove this project's containers, volumes and network (no question asked: CI has no terminal)."""
    from qbctl import views
    from qbctl.workflows import ci

    st = state(ctx, json)
    st.on_interrupt = "the teardown may be half done; `qbctl ci teardown` again finishes it"
    with st.out.progress("ci teardown") as events:
        result = ci.teardown(st.settings, events, rt=st.rt)
    finish(st, result, views.down)
