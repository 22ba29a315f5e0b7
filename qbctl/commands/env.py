"""qbctl env check."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from qbctl.commands.base import JSON_OPTION, finish, state

env_app = typer.Typer(help="The .env file.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")


@env_app.command("check")
def check_cmd(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Bad values and unknown keys in .env (with the setting each was probably meant to be)."""
    from qbctl import views
    from qbctl.config import envcheck
    from qbctl.config.settings import find_project

    st = state(ctx, json)
    st.on_interrupt = "nothing was changed"
    folder = find_project(Path.cwd(), st.project_dir or os.environ.get("QBCTL_PROJECT_DIR") or None)
    finish(st, envcheck.check(st.env_file, folder.root), views.env_check)
