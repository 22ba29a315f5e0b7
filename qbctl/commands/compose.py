"""qbctl compose render."""

from __future__ import annotations

import typer

from qbctl.commands.base import finish, state

compose_app = typer.Typer(help="The stack as a docker compose file.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(compose_app, name="compose")


@compose_app.command("render")
def render_cmd(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Exit 1 when the file differs; write nothing."),
):
    """Write compose/docker-compose.dev.yml from the stack qbctl runs."""
    from qbctl import views
    from qbctl.stack import compose_file

    st = state(ctx)
    st.on_interrupt = "the compose file may be half written: `qbctl compose render` again writes it whole"
    finish(st, compose_file.write(st.settings, check), views.compose)
