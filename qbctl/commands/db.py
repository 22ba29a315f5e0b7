"""qbctl db migrate / status / verify / reset / seed / shell."""

from __future__ import annotations

from typing import List, Optional

import typer

from qbctl.commands.base import JSON_OPTION, confirm, finish, state
from qbctl.errors import UsageError

db_app = typer.Typer(help="Schema, TimescaleDB policies and sample data.", no_args_is_help=True)
WITHOUT_TSDB = typer.Option(
    False, "--without-timescaledb", help="Apply the plain schema; skip hypertables and policies (reported as skipped)."
)
WAIT = typer.Option(
    30.0, "--wait", min=0, metavar="SECONDS", help="Seconds to wait for a database that is still starting."
)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


@db_app.command()
def migrate(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing; list what would run."),
    without_timescaledb: bool = WITHOUT_TSDB,
    accept_edited: bool = typer.Option(
        False, "--accept-edited", help="Record the new checksum of applied files that were edited."
    ),
    wait: float = WAIT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show the server's NOTICEs."),
    rehearse: bool = typer.Option(
        False,
        "--rehearse",
        help="Apply the pending files to a throwaway copy of the database and report each "
        "statement (errors, time, locks, rows); the database itself is not changed.",
    ),
    logical: bool = typer.Option(
        False,
        "--logical",
        help="With --rehearse: copy by pg_dump | pg_restore into a new "
        "database of the same server (no second server; slower).",
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Apply sql/schema, then sql/policies (re-applied when their rendered text changes)."""
    from qbctl import views
    from qbctl.db import migrate as mig

    st = state(ctx, json)
    if logical and not rehearse:
        raise UsageError(
            "--logical goes with --rehearse (how the copy is made)", hint="qbctl db migrate --rehearse --logical"
        )
    if rehearse:
        if dry_run or accept_edited:
            raise UsageError(
                "--rehearse cannot be combined with --dry-run or --accept-edited",
                hint="--rehearse changes nothing in the database already; drop the other option",
            )
        _rehearse(st, without_timescaledb, wait, logical)
    st.on_interrupt = (
        "the file being applied was rolled back (one run statement by statement keeps the statements "
        "it committed: `qbctl db status`); files applied before it stay applied"
    )
    options = mig.MigrateOptions(
        dry_run=dry_run,
        without_timescaledb=without_timescaledb,
        accept_edited=accept_edited,
        wait=wait,
        verbose=verbose or st.verbose,
    )
    with st.out.progress("migrating") as events:
        result = mig.migrate(st.settings, options, events, rt=st.rt)
    finish(st, result, views.migrate)


def _rehearse(st, without_timescaledb: bool, wait: float, logical: bool) -> None:
    from qbctl import views
    from qbctl.workflows import rehearse as reh

    st.on_interrupt = "the copy was dropped; the database was not touched"
    options = reh.RehearseOptions(without_timescaledb=without_timescaledb, wait=wait, logical=logical)
    with st.out.progress("rehearsing") as events:
        result = reh.rehearse(st.settings, options, events, rt=st.rt)
    finish(st, result, views.rehearse)


@db_app.command("status")
def status_cmd(
    ctx: typer.Context,
    json: bool = JSON_OPTION,
    exit_code: bool = typer.Option(False, "--exit-code", help="Exit 1 when migrations are pending."),
) -> None:
    """Applied, pending and changed migrations; hypertables, policies and their jobs."""
    from qbctl import views
    from qbctl.db import status as dbstatus

    st = state(ctx, json)
    st.on_interrupt = "nothing was changed"
    finish(st, dbstatus.status(st.settings, pending_is_failure=exit_code, rt=st.rt), views.db_status)


@db_app.command()
def verify(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Declared TimescaleDB state (sql/policies) against the database; exit 1 on drift."""
    from qbctl import views
    from qbctl.db import timescale

    st = state(ctx, json)
    st.on_interrupt = "nothing was changed"
    finish(st, timescale.verify(st.settings, rt=st.rt), views.verify)


@db_app.command("reset")
def reset_cmd(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    without_timescaledb: bool = WITHOUT_TSDB,
    no_snapshot: bool = typer.Option(False, "--no-snapshot", help="Do not snapshot the data first."),
    json: bool = JSON_OPTION,
) -> None:
    """Snapshot the data, empty the database (every table and its data) and migrate again."""
    from qbctl import views
    from qbctl.db import migrate as mig
    from qbctl.workflows import db_reset as dbreset

    st = state(ctx, json)
    settings = st.settings
    confirm(st, yes, f"This deletes every table and row in {settings.pg.masked()}.")
    st.on_interrupt = "the database may be empty or half migrated; `qbctl db migrate` finishes it"
    with st.out.progress("resetting the database") as events:
        result = dbreset.reset(
            settings,
            mig.MigrateOptions(without_timescaledb=without_timescaledb),
            events,
            snapshot=not no_snapshot,
            rt=st.rt,
        )
    finish(st, result, views.db_reset)


@db_app.command()
def seed(
    ctx: typer.Context,
    symbols: int = typer.Option(10, "--symbols", min=1, max=2500, metavar="N", help="How many KRX symbols."),
    days: int = typer.Option(30, "--days", min=1, max=3650, metavar="DAYS", help="How many days of 1-minute candles."),
    redis_keys: bool = typer.Option(True, "--redis/--no-redis", help="Also fill the backend's Redis keys."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Also seed symbols that hold rows db seed did not write (those rows are kept)."
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Realistic synthetic candles, indicators, trades and logs (COPY), and the Redis keys."""
    from qbctl import views
    from qbctl.db import seed as seed_mod

    st = state(ctx, json)
    st.on_interrupt = "nothing of this seed was committed"
    options = seed_mod.SeedOptions(symbols=symbols, days=days, redis=redis_keys, yes=yes)
    with st.out.progress("seeding") as events:
        result = seed_mod.seed(st.settings, options, events, rt=st.rt)
    finish(st, result, views.seed)


@db_app.command()
def lint(
    ctx: typer.Context,
    paths: Optional[List[str]] = typer.Argument(
        None, metavar="[FILE...]", help="Files to lint [default: the pending ones]"
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    json: bool = JSON_OPTION,
) -> None:
    """What pending migrations will do on the VM: TimescaleDB's failures and locks, and squawk's rules."""
    from qbctl import views
    from qbctl.db import lint_run

    st = state(ctx, json)
    st.on_interrupt = "nothing was changed"
    with st.out.progress("linting") as events:
        result = lint_run.lint(
            st.settings, lint_run.LintOptions(paths=tuple(paths or ()), strict=strict), events, rt=st.rt
        )
    finish(st, result, views.lint)


@db_app.command()
def new(
    ctx: typer.Context,
    name: str = typer.Argument(
        ...,
        help="What the migration does, in a few words (add_audit_table); a number "
        "of your own in front (0012_add_audit) is kept.",
    ),
    no_transaction: bool = typer.Option(
        False,
        "--no-transaction",
        help="Mark the file `-- qbctl: no-transaction`: each statement commits "
        "by itself (CREATE INDEX CONCURRENTLY, VACUUM).",
    ),
    json: bool = JSON_OPTION,
) -> None:
    """Start a migration: the next-numbered file in sql/schema; prints its path."""
    from qbctl import views
    from qbctl.db import new as dbnew

    st = state(ctx, json)
    st.on_interrupt = "nothing was written"
    finish(st, dbnew.new(st.settings, name, no_transaction, rt=st.rt), views.db_new)


@db_app.command(context_settings={"ignore_unknown_options": True})
def shell(
    ctx: typer.Context,
    local: Optional[bool] = typer.Option(
        None,
        "--local/--container",
        help="Use a local psql, or the one in the postgres container [default: the container when it runs]",
    ),
    args: Optional[List[str]] = typer.Argument(
        None, metavar="[-- PSQL_ARGS...]", help="Passed to psql as they are, e.g. -- -c 'select 1'"
    ),
) -> None:
    """psql into the database (in the postgres container, or a local psql)."""
    from qbctl.db import shell as dbshell

    st = state(ctx)
    run = dbshell.plan(st.settings, local, list(args or ()), tty=st.out.interactive, rt=st.rt)
    code = dbshell.run(run)
    if code == dbshell.PSQL_CONNECTION_BAD:
        st.out.note(
            f"hint: psql ({run.where}) could not connect to {st.settings.pg.masked()}; `qbctl status` "
            "shows whether the stack runs, `qbctl up postgres` starts it"
        )
    raise typer.Exit(code)
