"""qbctl config show."""

from __future__ import annotations

import typer

from qbctl.commands.base import JSON_OPTION, finish, state

config_app = typer.Typer(help="Resolved settings.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Every setting's value (secrets masked) and where it came from."""
    from qbctl import views
    from qbctl.config.settings import shown
    from qbctl.db import files

    st = state(ctx, json)
    st.on_interrupt = "nothing was changed"
    settings = st.read_settings()
    finish(st, shown(settings, files.describe(settings)), views.config)
