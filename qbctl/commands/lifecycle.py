"""qbctl up / down / reset / status / logs."""

from __future__ import annotations

from typing import List, Optional

import typer

from qbctl.commands.base import JSON_OPTION, confirm, finish, state
from qbctl.errors import UsageError


def _complete_service(ctx: typer.Context, incomplete: str) -> list[str]:
    """Service names for the shell's completion, leaving out those already on the line."""
    from qbctl.stack.spec import SERVICES  # here, not at import: every command would pay for it

    given = set(ctx.params.get("services") or ())
    return [s for s in SERVICES if s.startswith(incomplete) and s not in given]


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(reset)
    app.command()(status)
    app.command()(logs)


def up(
    ctx: typer.Context,
    services: Optional[List[str]] = typer.Argument(
        None, help="postgres, redis, adminer, redis-commander [default: all]", autocompletion=_complete_service
    ),
    no_ui: bool = typer.Option(False, "--no-ui", help="Leave out Adminer and Redis Commander."),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", min=0.1, metavar="SECONDS", help="Seconds to wait for readiness [default: QBCTL_UP_TIMEOUT]"
    ),
    profile: Optional[str] = typer.Option(
        None,
        "--profile",
        metavar="NAME",
        help="development or production (no UIs, restart always, loopback ports) [default: QBCTL_PROFILE]",
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Start the stack (idempotent) and wait until every service answers."""
    from qbctl import views
    from qbctl.stack import up as up_mod

    st = state(ctx, json)
    settings = st.settings
    from qbctl.stack.spec import PROFILES

    if profile is not None and profile not in PROFILES:
        raise UsageError(f"--profile {profile}: expected one of " + ", ".join(PROFILES))
    st.on_interrupt = "nothing was created or changed"  # once containers change, up says what it left
    options = up_mod.UpOptions(services=tuple(services or ()), no_ui=no_ui, timeout=timeout, profile=profile)
    with st.out.progress("starting the stack") as events:
        result = up_mod.up(settings, options, events, rt=st.rt)
    finish(st, result, views.up)


def down(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Stop and remove the containers; the volumes (your data) stay."""
    from qbctl import views
    from qbctl.stack import down as down_mod

    st = state(ctx, json)
    st.on_interrupt = "some containers may be left; `qbctl down` again removes them (your data stays)"
    with st.out.progress("stopping the stack") as events:
        result = down_mod.down(st.settings, events, rt=st.rt)
    finish(st, result, views.down)


def reset(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    no_snapshot: bool = typer.Option(False, "--no-snapshot", help="Do not snapshot the data first."),
    json: bool = JSON_OPTION,
) -> None:
    """Snapshot the data, then remove this project's containers, volumes (all its data) and network."""
    from qbctl import views
    from qbctl.stack.spec import require_project
    from qbctl.workflows import reset as reset_mod

    st = state(ctx, json)
    settings = st.settings
    require_project(settings, "nothing was removed")
    confirm(
        st,
        yes,
        f"This deletes every container and volume of project {settings.project!r}, with their data"
        + ("." if no_snapshot else " (after a snapshot of it)."),
    )
    st.on_interrupt = "the reset may be half done; `qbctl reset --yes` again finishes it"
    with st.out.progress("removing the stack") as events:
        result = reset_mod.reset(settings, reset_mod.ResetOptions(snapshot=not no_snapshot), events, rt=st.rt)
    finish(st, result, views.reset)


def status(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """One row per service: state, health, ports, image, memory."""
    from qbctl import views
    from qbctl.stack import status as status_mod

    st = state(ctx, json)
    st.on_interrupt = "nothing was changed"
    finish(st, status_mod.status(st.read_settings(), rt=st.rt), views.status)


def logs(
    ctx: typer.Context,
    service: str = typer.Argument(
        ..., help="postgres, redis, adminer or redis-commander", autocompletion=_complete_service
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: Optional[int] = typer.Option(None, "--tail", "-n", min=0, metavar="N", help="Only the last N lines."),
) -> None:
    """Print a service's log."""
    from qbctl import views
    from qbctl.stack import logs as logs_mod

    st = state(ctx)
    st.on_interrupt = "stopped following the log; the service keeps running"
    views.stream(st.out, logs_mod.stream(st.read_settings(), service, follow, tail, rt=st.rt), flush_each=follow)
