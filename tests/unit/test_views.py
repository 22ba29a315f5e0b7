"""Every view, whole: the exact text each one draws at 80 and 120 columns, no colour (as hatch tests its output).

A terminal (rich tables, long lines wrapped between words) of a fixed width, the escapes removed. The expected
text is in tests/unit/views/<case>.<width>.txt: read it there as a user reads the output. A view that changes
on purpose: `QBCTL_UPDATE_VIEWS=1 python -m pytest tests/unit/test_views.py` writes the new text, and the diff
of those files is what a reviewer reads.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from pathlib import Path

import pytest

from qbctl import views
from qbctl.checks import load
from qbctl.config import settings as S
from qbctl.config.envcheck import EnvCheckResult
from qbctl.db.lint_run import LintResult
from qbctl.db.migrate import MigrateResult
from qbctl.db.new import NewResult
from qbctl.db.seed import SeedResult
from qbctl.errors import CheckFailed
from qbctl.output import Output
from qbctl.snapshots.snapshot import SnapshotList, SnapshotRemoved, SnapshotResult
from qbctl.stack.compose_file import ComposeResult
from qbctl.stack.down import DownResult
from qbctl.workflows.ci import CiResult
from qbctl.workflows.db_reset import DbResetResult
from qbctl.workflows.rehearse import RehearseResult
from qbctl.workflows.reset import ResetResult
from qbctl.workflows.restore import RestoreResult
from qbctl.workflows.upgrade import UpgradeResult
from tests.unit.test_tables import (
    budget_result,
    config_result,
    db_status_result,
    health_result,
    settings,
    status_result,
    up_result,
    verify_result,
)

EXPECTED = Path(__file__).parent / "views"
ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WIDTHS = (80, 120)
DB = "postgresql://qb_user:***@localhost:5432/qb_trading_dev"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _migrate(cls=MigrateResult, **extra):
    return cls(
        DB,
        False,
        "2.28.3",
        applied=[
            {"action": "applied", "file": "sql/schema/0001_extensions.sql", "ms": 41},
            {"action": "applied", "file": "sql/schema/0005_hypertables.sql", "ms": 230, "statements": 7},
        ],
        skipped=[{"file": "sql/schema/0002_timescaledb_only.sql", "reason": "needs TimescaleDB"}],
        up_to_date=3,
        seconds=0.42,
        **extra,
    )


def _budget_under_load():
    result = budget_result()[0]
    items = []
    for item in result.items:
        if item.name == "postgres":
            item = dataclasses.replace(
                item,
                measured_mb=240.2,
                peak_with_cache_mb=281.5,
                error_pct=8.0,
                kills=["postgres: a backend was killed by signal 9 at 12:00:03 (the log)"],
            )
        elif item.name == "redis":
            item = dataclasses.replace(item, measured_mb=127.0, peak_with_cache_mb=127.4, error_pct=0.8)
        items.append(item)
    get = load.Latency(count=120000, errors=0, p50_ms=0.89, p99_ms=54.0, max_ms=80.0)
    queries = {
        "newest candles": load.Latency(count=900, errors=0, p50_ms=12.0, p99_ms=691.0),
        "daily bars": load.Latency(count=300, errors=1, p50_ms=140.0, p99_ms=2091.0),
    }
    return dataclasses.replace(
        result,
        items=items,
        load={
            "seconds": 60,
            "sessions": 7,
            "queries": queries,
            "redis": {"get": get, "evicted": {"ticks": 1200}, "bgsave": "ok (1 save, 0.4s)"},
            "notes": ["the machine's load was 3.1 at the start"],
        },
    )


def _snapshot():
    return SnapshotResult(
        "before-orders-refactor",
        path="/home/dev/.local/share/qbctl/snapshots/qb/before-orders-refactor",
        postgres={
            "version": "15.18 (Debian 15.18-1.pgdg120+1)",
            "timescaledb": "2.28.3",
            "tables": 12,
            "rows": 1640000,
        },
        redis={"keys": 5400},
        bytes=48 * 2**20,
        seconds=6.8,
        restore_command="qbctl restore before-orders-refactor",
        forms=["data directory", "dump"],
        notes=["TimescaleDB's jobs were held while it was taken"],
        pruned=["auto-20261120-0900"],
    )


def _snapshot_list():
    rows = [
        {
            "name": "before-orders-refactor",
            "created": "2026-11-26T09:10:00+00:00",
            "problem": "",
            "automatic": False,
            "before": "",
            "bytes": 48 * 2**20,
            "postgres": "15.18 (Debian)",
            "timescaledb": "2.28.3",
            "rows": 1640000,
            "redis_keys": 5400,
        },
        {
            "name": "auto-20261127-0800",
            "created": "2026-11-27T08:00:00+00:00",
            "problem": "",
            "automatic": True,
            "before": "reset",
            "bytes": 900 * 1024,
            "postgres": "15.18",
            "timescaledb": None,
            "rows": 0,
            "redis_keys": None,
        },
        {
            "name": "half-written",
            "created": None,
            "problem": "no manifest",
            "automatic": False,
            "before": "",
            "bytes": None,
            "postgres": None,
            "timescaledb": None,
            "rows": 0,
            "redis_keys": None,
        },
    ]
    return SnapshotList("/home/dev/.local/share/qbctl/snapshots/qb", 5, rows)


def _failed(result):
    result.fail(CheckFailed("the second step failed", code="UNHEALTHY"))
    return result


def _rehearsed(ok=True):
    locks = [
        {
            "table": "market_data",
            "mode": "AccessExclusiveLock",
            "seconds": 41.2,
            "line": 3,
            "says": "an AccessExclusiveLock on market_data for 41 s blocks the collector's inserts and every read "
            "of it for 41 s",
        },
        {"table": "orders", "mode": "RowExclusiveLock", "seconds": 0.1, "line": 5, "says": ""},
    ]
    statements = [
        {
            "line": 3,
            "ok": True,
            "ms": 41200.0,
            "text": "ALTER TABLE market_data ADD COLUMN venue text NOT NULL ...",
            "rows": {"market_data": {"updated": 1640000}},
            "rewritten": {"market_data": 22},
            "decompressed": {"market_data": 15},
            "locks": {"market_data": "AccessExclusiveLock"},
        },
        {
            "line": 5,
            "ok": ok,
            "ms": 0.4,
            "text": "UPDATE orders SET venue = 'KRX'",
            **({} if ok else {"error": 'sql/schema/0007_venue.sql:5: 42703 column "venue" does not exist'}),
        },
    ]
    return RehearseResult(
        DB,
        copy={
            "method": "pg_basebackup into a scratch container (the same image, TimescaleDB's jobs off)",
            "where": "container qb-postgres-rehearse on this machine's engine",
            "seconds": 3.2,
            "source_bytes": 326 * 2**20,
        },
        files=[{"file": "sql/schema/0007_venue.sql", "ok": ok, "ms": 41201, "statements": statements, "locks": locks}],
        not_run=[] if ok else ["sql/policies/020_compression.sql"],
        up_to_date=6,
        copy_seconds=3.2,
        apply_seconds=41.3,
        seconds=44.9,
        dropped=True,
        ok=ok,
    )


CASES = {
    "up": (views.up, lambda: up_result()[0]),
    "down": (views.down, lambda: DownResult("qb", ["qb-postgres", "qb-redis"], network_removed=True)),
    "down-nothing": (views.down, lambda: DownResult("qb", [])),
    "reset": (
        views.reset,
        lambda: ResetResult("qb", ["qb-postgres"], ["qb_pgdata", "qb_redisdata"], True, snapshot="auto-20261127-0800"),
    ),
    "reset-no-snapshot": (
        views.reset,
        lambda: ResetResult("qb", [], ["qb_pgdata"], snapshot_skipped="the stack holds no data yet"),
    ),
    "db-reset": (views.db_reset, lambda: _migrate(DbResetResult, snapshot="auto-20261127-0801")),
    "status": (views.status, lambda: status_result()[0]),
    "migrate": (views.migrate, _migrate),
    "migrate-dry-run": (
        views.migrate,
        lambda: MigrateResult(
            DB,
            True,
            None,
            would_apply=["sql/schema/0006_orders.sql", "sql/schema/0007_index.sql"],
            one_by_one={"sql/schema/0007_index.sql": "CREATE INDEX CONCURRENTLY cannot run in a transaction"},
            up_to_date=5,
            seconds=0.05,
        ),
    ),
    "migrate-failed": (views.migrate, lambda: _failed(_migrate())),
    "rehearse": (views.rehearse, _rehearsed),
    "rehearse-failed": (views.rehearse, lambda: _failed(_rehearsed(ok=False))),
    "rehearse-nothing": (views.rehearse, lambda: RehearseResult(DB, up_to_date=6, seconds=0.2)),
    "lint": (
        views.lint,
        lambda: LintResult(
            files=["sql/schema/0006_orders.sql"],
            findings=[
                {
                    "file": "sql/schema/0006_orders.sql",
                    "line": 4,
                    "severity": "error",
                    "rule": "adding-not-null-column",
                    "message": "a NOT NULL column without a default rewrites and locks the table",
                    "safe": "add it nullable, backfill in batches, then SET NOT NULL",
                }
            ],
            catalog="the database (qb_trading_dev)",
            squawk="2.21.0",
            errors=1,
            warnings=0,
        ),
    ),
    "lint-nothing": (views.lint, lambda: LintResult(files=[], catalog="the files", squawk="2.21.0")),
    "db-new": (
        views.db_new,
        lambda: NewResult(
            "sql/schema/0008_add_audit.sql",
            "add_audit",
            False,
            "the files in sql/schema (the database was not reachable)",
        ),
    ),
    "seed": (
        views.seed,
        lambda: SeedResult(
            DB,
            10,
            30,
            rows={"market_data": 1640000, "technical_indicators": 3270000, "orders": 0},
            replaced={"market_data": 82000, "orders": 0},
            kept={"005930": 390},
            redis_keys=5400,
            seconds=4.25,
            market_data_rows_per_second=477965,
            notes=["TimescaleDB's jobs were held while seed wrote"],
        ),
    ),
    "seed-shaped": (
        views.seed,
        lambda: SeedResult(
            DB,
            10,
            30,
            rows={"market_data": 1640000},
            seconds=6.1,
            market_data_rows_per_second=412000,
            compression={"market_data": {"chunks": 22, "compressed": 15}, "trades": {"chunks": 5, "compressed": 3}},
            refreshed={
                "market_data_1d": "over all of history (refresh_continuous_aggregate): its refresh "
                "policy's window, the last 5 days, does not reach the oldest seeded minute"
            },
            jobs_run=[1016, 1019, 1020],
        ),
    ),
    "seed-nothing": (views.seed, lambda: SeedResult(DB, 1, 1, rows={"market_data": 0}, seconds=0.1)),
    "db-status": (views.db_status, lambda: dataclasses.replace(db_status_result()[0], timescaledb_available="2.28.4")),
    "verify-drift": (views.verify, lambda: verify_result()[0]),
    "health": (views.health, lambda: health_result()[0]),
    "budget": (views.budget, lambda: budget_result()[0]),
    "budget-load": (views.budget, _budget_under_load),
    "ci": (
        views.ci,
        lambda: CiResult(
            "qb",
            steps=[
                {"step": "up", "ok": True, "seconds": 2.77},
                {"step": "lint", "ok": True, "seconds": 0.31},
                {"step": "migrate", "ok": True, "seconds": 0.18},
                {"step": "health", "ok": True, "seconds": 0.27},
            ],
            lint=[{"severity": "warning"}],
            exported=["DATABASE_URL", "REDIS_URL"],
            seconds=3.6,
        ),
    ),
    "env-check": (
        views.env_check,
        lambda: EnvCheckResult(
            Path("/home/dev/qb/.env"),
            None,
            unknown=[
                {"key": "POSTGRES_SHARED_BUFFER", "did_you_mean": "POSTGRES_SHARED_BUFFERS"},
                {"key": "QBCTL_PROJECT_DIR", "did_you_mean": None, "note": "read from the environment only"},
            ],
            invalid=[{"key": "POSTGRES_WORK_MEM", "value": "4 MiB", "problem": "not a size: write 4MB"}],
            defaults=31,
            ok=False,
        ),
    ),
    "env-check-ok": (views.env_check, lambda: EnvCheckResult(Path("/home/dev/qb/.env"), None, defaults=31)),
    # the schema folder is where qbctl is checked out: a fixed one, so the text does not depend on the clone
    "config": (
        views.config,
        lambda: dataclasses.replace(config_result()[0], schema="/home/dev/qb/tools/qbctl/sql (shipped with qbctl)"),
    ),
    "compose": (views.compose, lambda: ComposeResult(Path("/home/dev/qb/docker-compose.yml"), written=True)),
    "snapshot": (views.snapshot, _snapshot),
    "snapshot-skipped": (
        views.snapshot,
        lambda: SnapshotResult("auto-20261127-0800", skipped="the stack holds no data yet"),
    ),
    "snapshot-list": (views.snapshot_list, _snapshot_list),
    "snapshot-list-empty": (views.snapshot_list, lambda: SnapshotList("/home/dev/.local/share/qbctl/snapshots/qb", 5)),
    "snapshot-rm": (views.snapshot_rm, lambda: SnapshotRemoved("before-orders-refactor", 48 * 2**20)),
    "restore": (
        views.restore,
        lambda: RestoreResult(
            "before-orders-refactor",
            database="qb_trading_dev",
            postgres={"tables": 12, "rows": 1640000, "seconds": 5.1},
            redis={"keys": 5400, "seconds": 0.3},
            safety_snapshot="auto-20261127-0802",
            notes=["restored from the data directory"],
            seconds=6.8,
        ),
    ),
    "upgrade-major": (
        views.upgrade,
        lambda: UpgradeResult(
            "major",
            "PostgreSQL 15 -> 17",
            volume="qb_pgdata",
            target="qb_pgdata_pg17",
            from_major="15",
            to_major="17",
            timescaledb=[{"database": "qb_trading_dev", "from": "2.28.2", "to": "2.28.3"}],
            databases=[{"database": "qb_trading_dev", "tables": 12, "rows": 1640000}],
            verify={"ok": True, "detail": "41 declared items match"},
            snapshot="auto-20261127-0803",
            kept_volume="qb_pgdata",
            remove_command="docker volume rm qb_pgdata",
            seconds=48.2,
        ),
    ),
    "upgrade-extension": (
        views.upgrade,
        lambda: UpgradeResult(
            "extension",
            "TimescaleDB updated in every database",
            timescaledb=[
                {"database": "postgres", "from": "2.28.3", "to": "2.28.3"},
                {"database": "qb_trading_dev", "from": "2.28.2", "to": "2.28.3"},
            ],
            verify={"ok": None, "detail": "no schema declared here"},
        ),
    ),
}


def drawn(case: str, width: int) -> str:
    """What a view writes on a terminal `width` columns wide, escapes removed; stderr after it, if any."""
    fn, make = CASES[case]
    stdout, stderr = Terminal(), io.StringIO()
    fn(Output(stdout=stdout, stderr=stderr, environ={}, width=width), make())
    text = ESC.sub("", stdout.getvalue())
    if stderr.getvalue():
        text += "--- stderr ---\n" + ESC.sub("", stderr.getvalue())
    return text


def test_every_view_has_a_case():
    public = {
        name
        for name in dir(views)
        if not name.startswith("_")
        and callable(getattr(views, name))
        and getattr(getattr(views, name), "__module__", "") == views.__name__
    }
    covered = {fn.__name__ for fn, _ in CASES.values()} | {"stream"}  # stream: bytes, tested below
    assert public - covered == set()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("case", CASES)
def test_the_whole_view(case, width):
    path = EXPECTED / f"{case}.{width}.txt"
    text = drawn(case, width)
    if os.environ.get("QBCTL_UPDATE_VIEWS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no expected text for {case} at {width}: run with QBCTL_UPDATE_VIEWS=1 and read it"
    assert text == path.read_text()


def test_stream_copies_bytes_as_they_come():
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8")
    views.stream(Output(stdout=stdout, stderr=io.StringIO(), environ={}), [b"2026-11-27 LOG:  ready\n", b"\xff\n"])
    assert raw.getvalue() == b"2026-11-27 LOG:  ready\n\xff\n"
    text = io.StringIO()
    views.stream(Output(stdout=text, stderr=io.StringIO(), environ={}), [b"a\n", b"\xff\n"])
    assert text.getvalue() == "a\n\ufffd\n"


def test_settings_of_the_cases_are_the_defaults():
    """The cases draw the default settings: a changed default shows as a changed view, on purpose."""
    assert settings().project == "qb-backend-feature-branch"
    assert S.load(environ={}, cwd=Path("/nonexistent-qbctl-test")).pg.port == 5432
