"""Every table and long line, rendered at 80 and 120 columns on a (fake) terminal: no value a user needs is
cut, no line is wider than the terminal unless it is one unbreakable value; off a terminal and under
NO_COLOR: plain text, no escapes, no trailing blanks."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from qbctl import views
from qbctl.checks import budget, health, running
from qbctl.config import settings as S
from qbctl.db import status as dbstatus
from qbctl.db import timescale
from qbctl.output import Output
from qbctl.stack import status as status_mod
from qbctl.stack import up as up_mod

ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WIDTHS = (80, 120)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def settings():
    return S.load(environ={"QBCTL_PROJECT": "qb-backend-feature-branch"}, cwd=Path("/nonexistent-qbctl-test"))


def up_result():
    s = settings()
    from qbctl.stack.spec import build_stack

    stack = build_stack(s)
    services = [
        up_mod.ServiceResult(spec.name, spec.image, [f"127.0.0.1:{spec.ports[0].host}"], "create", True, 2.5)
        for spec in stack.services
    ]
    result = up_mod.UpResult(
        stack.project,
        services,
        "",
        {"ready": 3.2},
        [],
        up_mod.urls(s, list(stack.services)),
        up_mod.NEXT_COMMANDS,
        ok=True,
    )
    values = [v for svc in services for v in (svc.name, svc.image, svc.ports[0])] + list(result.urls.values())
    return result, values


def status_result():
    rows = [
        status_mod.ServiceStatus(
            "postgres",
            "running",
            "healthy",
            ["127.0.0.1:5432"],
            "timescale/timescaledb:latest-pg15",
            31 * 2**20,
            300 * 2**20,
        ),
        status_mod.ServiceStatus(
            "redis-commander",
            "exited",
            None,
            ["127.0.0.1:8081"],
            "rediscommander/redis-commander:latest",
            None,
            160 * 2**20,
            3,
            137,
            True,
        ),
    ]
    result = status_mod.StatusResult("qb-backend-feature-branch", rows, [], "named by QBCTL_PROJECT (from .env)")
    return result, [
        "timescale/timescaledb:latest-pg15",
        "rediscommander/redis-commander:latest",
        "127.0.0.1:5432",
        "31MB / 300MB",
        "exited (OOM killed) (exit 137) (restarted 3x)",
        "named by QBCTL_PROJECT",
    ]


def config_result():
    s = settings()
    result = S.shown(s)
    return result, [
        "postgresql://qb_user:***@localhost:5432/qb_trading_dev",
        "TIMESCALEDB_MAX_BACKGROUND_WORKERS",
        "ghcr.io/joeferner/redis-commander:0.9.1",
        "QBCTL_REDIS_COMMANDER_MEMORY",
    ]


def health_result():
    checks = [
        health.Check(
            "postgres",
            False,
            "cannot reach PostgreSQL at postgresql://qb_user:***@localhost:5432/qb_trading_dev: connection refused",
        ),
        health.Check("timescaledb jobs", True, "TimescaleDB 2.28.3; no failed jobs"),
    ]
    return health.HealthResult("qb", checks), [
        "postgresql://qb_user:***@localhost:5432/qb_trading_dev:",
        "connection refused",
        "TimescaleDB 2.28.3; no failed jobs",
    ]


def db_status_result():
    result = dbstatus.DbStatus(
        "postgresql://qb_user:***@localhost:5432/qb_trading_dev",
        "2.28.3",
        [{"file": "sql/schema/0004_orders_trades_positions.sql", "state": "applied", "reason": ""}],
        [
            {
                "name": "technical_indicators",
                "chunks": 31,
                "compressed_chunks": 24,
                "size_bytes": 48 * 2**20,
                "compression_ratio": 11.5,
            }
        ],
        [
            {
                "job_id": 1000,
                "kind": "policy_compression",
                "table": "technical_indicators",
                "interval": "12:00:00",
                "last_run": "2026-11-26T15:00:00.123+00:00",
                "last_run_status": "Success",
                "total_runs": 3,
                "total_failures": 0,
                "why": "ran 3 times; next run 2026-11-27 03:00",
            }
        ],
    )
    return result, [
        "sql/schema/0004_orders_trades_positions.sql",
        "policy_compression",
        "technical_indicators",
        "2026-11-26T15:00:00",
        "11.5x",
    ]


def verify_result():
    drift = [
        {
            "item": "compression technical_indicators",
            "problem": "different",
            "declared": "segmentby symbol, timeframe, name; orderby time DESC",
            "actual": "segmentby symbol; orderby time DESC",
        }
    ]
    return timescale.VerifyResult("db", "2.28.3", drift), [drift[0]["item"], drift[0]["declared"], drift[0]["actual"]]


def budget_result():
    # A running Redis with another maxmemory than the settings': the difference is a line of its own.
    now = running.Running(
        redis_config={"maxmemory": str(200 * 2**20), "maxmemory-policy": "allkeys-lru", "save": ""},
        recreated={"redis": True},
    )
    result = budget.configured(settings(), now)
    # Shown term by term: every word of every term (and of the derivation of items without terms).
    words = [
        w
        for i in result.items
        if i.production
        for w in (" ".join(f"{t['name']} {t['text']}" for t in i.terms) if i.terms else i.derivation).split()
    ]
    return result, [
        "postgres",
        "redis-commander",
        *words,
        *result.items[1].differences[0].text.split(),
        *result.notes[0].split(),
    ]


CASES = {
    "up": (views.up, up_result),
    "status": (views.status, status_result),
    "config show": (views.config, config_result),
    "health": (views.health, health_result),
    "db status": (views.db_status, db_status_result),
    "db verify": (views.verify, verify_result),
    "budget": (views.budget, budget_result),
}


def rendered(fn, result, width: int | None, environ: dict | None = None, tty: bool = True) -> str:
    stdout = Terminal() if tty else io.StringIO()
    out = Output(stdout=stdout, stderr=io.StringIO(), environ=environ or {}, width=width)
    fn(out, result)
    return stdout.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", CASES)
def test_no_value_is_cut_and_no_line_is_wider_than_the_terminal(name, width):
    fn, make = CASES[name]
    result, values = make()
    text = ESC.sub("", rendered(fn, result, width))
    assert "…" not in text, text
    words = set(text.split())
    for value in values:
        if " " in value:
            assert value in text or value in " ".join(text.split()), f"{value!r} cut in:\n{text}"
        else:
            assert value in words or value in text, f"{value!r} cut in:\n{text}"
    for line in text.splitlines():
        unbreakable = len(line.strip().split()) <= 2  # a URL alone (behind its label) may exceed it
        assert len(line) <= width or unbreakable, f"{len(line)} > {width}: {line!r}"


@pytest.mark.parametrize("name", CASES)
def test_pipes_and_no_color_get_plain_text(name):
    fn, make = CASES[name]
    result, values = make()
    for text in (rendered(fn, result, 80, tty=False), rendered(fn, result, 80, environ={"NO_COLOR": "1"})):
        assert "\x1b" not in text
        assert all(line == line.rstrip() for line in text.splitlines()), "trailing blanks"
        for value in values:
            assert value in text or value in " ".join(text.split()), f"{value!r} missing from:\n{text}"


def test_up_ends_with_what_to_open():
    result, _ = up_result()
    text = rendered(views.up, result, 120, tty=False)
    assert "http://127.0.0.1:8080/?pgsql=postgres&username=qb_user&db=qb_trading_dev" in text
    assert "postgresql://qb_user:***@localhost:5432/qb_trading_dev" in text and "redis://localhost:6379/0" in text
    assert "http://127.0.0.1:8081/" in text and "`qbctl db migrate`" in text
    assert result.to_dict()["urls"]["adminer"].endswith("?pgsql=postgres&username=qb_user&db=qb_trading_dev")


@pytest.mark.parametrize("name", ["status", "db status", "config show"])
def test_every_width_in_between_keeps_every_value_whole(name):
    """Around the width where a table stops fitting, rich must never fold or shorten a value."""
    fn, make = CASES[name]
    result, values = make()
    for width in range(60, 161, 3):
        text = ESC.sub("", rendered(fn, result, width))
        for value in values:
            assert value in text or value in " ".join(text.split()), f"{value!r} cut at {width}:\n{text}"
        assert all(len(line) <= width or len(line.split()) <= 2 for line in text.splitlines()), (width, text)
