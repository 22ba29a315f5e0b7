"""qbctl health / qbctl budget."""

from __future__ import annotations

from typing import Optional

import typer

from qbctl.commands.base import JSON_OPTION, finish, state


def register(app: typer.Typer) -> None:
    app.command()(health)
    app.command()(budget)


def health(
    ctx: typer.Context,
    json: bool = JSON_OPTION,
    wait: bool = typer.Option(False, "--wait", help="Poll until healthy or the timeout."),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", min=0.1, metavar="SECONDS", help="With --wait: seconds in all [default: QBCTL_UP_TIMEOUT]"
    ),
    check_timeout: float = typer.Option(
        2.0, "--check-timeout", min=0.1, metavar="SECONDS", help="Seconds each check may take."
    ),
) -> None:
    """Is the stack really healthy? Every check at once; exit 1 when one fails."""
    from qbctl import views
    from qbctl.checks import health as health_mod

    st = state(ctx, json)
    st.on_interrupt = "stopped checking; nothing was changed"
    options = health_mod.HealthOptions(check_timeout=check_timeout, wait=wait, timeout=timeout)
    finish(st, health_mod.check(st.read_settings(), options, rt=st.rt), views.health)


def budget(
    ctx: typer.Context,
    json: bool = JSON_OPTION,
    load: bool = typer.Option(False, "--load", help="Run a load shaped like the backend and measure its peak."),
    seconds: float = typer.Option(
        60.0, "--seconds", min=5, max=3600, metavar="SECONDS", help="With --load: how long the load runs."
    ),
    redis_rate: int = typer.Option(
        2000,
        "--redis-rate",
        min=10,
        max=200000,
        metavar="OPS",
        help="With --load: Redis writes per second across the key families.",
    ),
) -> None:
    """Memory against the 1 GB budget: predicted peaks, measured use (--load: under load); exit 1 when over."""
    from qbctl import views
    from qbctl.checks import budget as budget_mod

    st = state(ctx, json)
    if not load:
        st.on_interrupt = "nothing was changed"
        finish(st, budget_mod.measure(st.read_settings(), rt=st.rt), views.budget)
        return
    from qbctl.checks.load import LoadOptions

    settings = st.read_settings()
    st.on_interrupt = "the load stopped; its own rows (symbols LOAD...) and keys (cache:qbctl-load:...) may be left"
    with st.out.progress("load") as events:
        result = budget_mod.under_load(settings, LoadOptions(seconds=seconds, redis_rate=redis_rate), events, rt=st.rt)
    finish(st, result, views.budget)
