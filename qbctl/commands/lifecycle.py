"""qbctl up / down / reset / status / logs."""
from __future__ import annotations

from typing import List, Optional

import typer

from qbctl.commands import JSON_OPTION, confirm, finish, state


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(reset)
    app.command()(status)
    app.command()(logs)


def up(
    ctx: typer.Context,
    services: Optional[List[str]] = typer.Argument(None, help="postgres, redis, adminer, redis-commander "
                                                              "[default: all]"),
    no_ui: bool = typer.Option(False, "--no-ui", help="Leave out Adminer and Redis Commander."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.1,
                                            help="Seconds to wait for readiness [default: QBCTL_UP_TIMEOUT]"),
    json: bool = JSON_OPTION,
) -> None:
    """Start the stack (idempotent) and wait until every service answers."""
    from qbctl import render
    from qbctl.stack import lifecycle

    st = state(ctx, json)
    settings = st.settings
    with st.out.status("starting the stack") as spinner:
        result = lifecycle.up(settings, services, no_ui, timeout, events=render.progress(st.out, spinner))
    finish(st, result, render.up)


def down(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Stop and remove the containers; the volumes (your data) stay."""
    from qbctl import render
    from qbctl.stack import lifecycle

    st = state(ctx, json)
    with st.out.status("stopping the stack") as spinner:
        result = lifecycle.down(st.settings, events=render.progress(st.out, spinner))
    finish(st, result, render.down)


def reset(ctx: typer.Context, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
          json: bool = JSON_OPTION) -> None:
    """Remove this project's containers, volumes (all its data) and network."""
    from qbctl import render
    from qbctl.stack import lifecycle

    st = state(ctx, json)
    settings = st.settings
    confirm(st, yes, f"This deletes every container and volume of project {settings.project!r}, with their data.")
    with st.out.status("removing the stack") as spinner:
        result = lifecycle.reset(settings, events=render.progress(st.out, spinner))
    finish(st, result, render.down)


def status(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """One row per service: state, health, ports, image, memory."""
    from qbctl import render
    from qbctl.stack import lifecycle

    st = state(ctx, json)
    finish(st, lifecycle.status(st.settings), render.status)


def logs(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="postgres, redis, adminer or redis-commander"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: Optional[int] = typer.Option(None, "--tail", "-n", min=0, help="Only the last N lines."),
) -> None:
    """Print a service's log."""
    from qbctl.stack import logs as logs_mod

    st = state(ctx)
    logs_mod.stream(st.settings, service, follow, tail)
