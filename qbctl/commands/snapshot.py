"""qbctl snapshot [NAME] / snapshot list / snapshot rm NAME, qbctl restore NAME, qbctl upgrade."""

from __future__ import annotations

from typing import Optional

import typer
from typer.core import TyperGroup

from qbctl.commands.base import JSON_OPTION, confirm, finish, state

YES = typer.Option(False, "--yes", "-y", help="Do not ask.")


class _TakeByDefault(TyperGroup):
    """`qbctl snapshot [NAME]` takes one; `list` and `rm` are subcommands (a name cannot be one of them)."""

    default_command = "take"  # also read by the command reference (qbctl/reference.py)

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


snapshot_app = typer.Typer(
    cls=_TakeByDefault,
    no_args_is_help=False,
    help="Take a snapshot of the stack's data: `qbctl snapshot [NAME] [--json]`; list and remove them.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(snapshot_app, name="snapshot")
    app.command()(restore)
    app.command()(upgrade)


@snapshot_app.command("take", hidden=True)
def take(
    ctx: typer.Context,
    name: Optional[str] = typer.Argument(None, help="Snapshot name [default: the time, 20260101-120000]"),
    logical: bool = typer.Option(
        False, "--logical", help="Only the dump: smaller, slower to restore (no copy of the data directory)."
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Snapshot PostgreSQL (pg_dump) and Redis (RDB) into .qbctl/snapshots/NAME."""
    from qbctl import views
    from qbctl.snapshots import snapshot

    st = state(ctx, json)
    st.on_interrupt = "no snapshot was kept (a partial one is never left behind)"
    with st.out.progress("taking a snapshot") as events:
        result = snapshot.take(st.settings, snapshot.SnapshotOptions(name=name, physical=not logical), events, rt=st.rt)
    finish(st, result, views.snapshot)


@snapshot_app.command("list")
def list_cmd(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """The project's snapshots, oldest first, with size, versions and rows."""
    from qbctl import views
    from qbctl.snapshots import snapshot

    st = state(ctx, json)
    finish(st, snapshot.listing(st.settings), views.snapshot_list)


@snapshot_app.command("rm")
def rm(
    ctx: typer.Context, name: str = typer.Argument(..., help="The snapshot to remove"), json: bool = JSON_OPTION
) -> None:
    """Remove a snapshot (its folder)."""
    from qbctl import views
    from qbctl.snapshots import snapshot

    st = state(ctx, json)
    finish(st, snapshot.remove(st.settings, name), views.snapshot_rm)


def restore(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The snapshot (`qbctl snapshot list`)"),
    yes: bool = YES,
    no_snapshot: bool = typer.Option(False, "--no-snapshot", help="Do not snapshot the current data first."),
    logical: bool = typer.Option(
        False, "--logical", help="Restore from the dump even where the copy of the data directory fits."
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Put a snapshot's data back: into a new database, checked, then switched in; Redis too."""
    from qbctl import views
    from qbctl.workflows import restore as restore_mod

    st = state(ctx, json)
    settings = st.settings
    restore_mod.find(settings, name)  # a wrong name is said before anything is asked
    confirm(
        st,
        yes,
        f"This replaces the data of project {settings.project!r} with snapshot {name!r}"
        + ("." if no_snapshot else " (the current data is snapshotted first)."),
    )
    st.on_interrupt = (
        "the running data is as it was (a switch under way was undone), unless the restored data "
        "had already been checked and switched in; `qbctl restore` again"
    )
    with st.out.progress(f"restoring {name}") as events:
        options = restore_mod.RestoreOptions(name=name, snapshot_first=not no_snapshot, logical=logical)
        result = restore_mod.restore(settings, options, events, rt=st.rt)
    finish(st, result, views.restore)


def upgrade(
    ctx: typer.Context,
    yes: bool = YES,
    from_image: Optional[str] = typer.Option(
        None,
        "--from-image",
        metavar="IMAGE",
        help="The image that made the data volume, when qbctl did not "
        "record it (e.g. timescale/timescaledb:latest-pg15).",
    ),
    no_snapshot: bool = typer.Option(
        False,
        "--no-snapshot",
        help="No snapshot before a TimescaleDB update (a major upgrade keeps the old volume instead).",
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Move the data to the image's PostgreSQL major or TimescaleDB version; the old volume is kept."""
    from qbctl import views
    from qbctl.workflows import upgrade as upgrade_mod

    st = state(ctx, json)
    plan = upgrade_mod.plan(st.settings, upgrade_mod.UpgradeOptions(from_image=from_image), rt=st.rt)
    if plan.question:
        confirm(st, yes, plan.question)
    st.on_interrupt = "the old volume is untouched; `qbctl upgrade` again starts over"
    with st.out.progress("upgrading") as events:
        result = upgrade_mod.upgrade(st.settings, plan, events, snapshot_first=not no_snapshot, rt=st.rt)
    finish(st, result, views.upgrade)
