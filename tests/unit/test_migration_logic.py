from __future__ import annotations

from pathlib import Path

from qbctl.config import settings as S
from qbctl.db import files as sqlfiles
from qbctl.db import timescale
from qbctl.db.files import SqlFile, checksum, normalise
from qbctl.db.migrate import Applied, plan

ROOT = Path(__file__).resolve().parents[2]


def f(kind, name, text, tsdb=False):
    return SqlFile(kind, name, Path(name), text, checksum(text), tsdb or kind == "policy")


def test_normalise_ignores_bom_and_line_endings():
    assert normalise(b"\xef\xbb\xbfa\r\nb\rc\n") == "a\nb\nc\n"
    assert checksum(normalise(b"x\r\n")) == checksum(normalise(b"x\n"))


def test_plan_states():
    local = [
        f("schema", "1.sql", "a", tsdb=True),
        f("schema", "2.sql", "b"),
        f("schema", "3.sql", "c"),
        f("policy", "p.sql", "new"),
    ]
    applied = {
        ("schema", "2.sql"): Applied("schema", "2.sql", checksum("b")),
        ("schema", "3.sql"): Applied("schema", "3.sql", checksum("edited")),
        ("policy", "p.sql"): Applied("policy", "p.sql", checksum("old")),
    }
    states = [(i.file, i.state) for i in plan(local, applied, timescaledb=True)]
    assert states == [
        ("sql/schema/1.sql", "pending"),
        ("sql/schema/2.sql", "applied"),
        ("sql/schema/3.sql", "changed"),
        ("sql/policies/p.sql", "reapply"),
    ]
    without = [(i.file, i.state) for i in plan(local, applied, timescaledb=False)]
    assert without[0] == ("sql/schema/1.sql", "skipped") and without[3] == ("sql/policies/p.sql", "reapply")


def test_policy_templates_render_from_settings():
    s = S.load(environ={"DATA_RETENTION_DAYS": "400"}, cwd=ROOT)
    text = {x.name: x.text for x in sqlfiles.load(s)}["030_retention.sql"]
    assert "INTERVAL '400 days'" in text and "{{" not in text


def test_declared_state_is_read_from_the_policy_files():
    s = S.load(environ={"COMPRESSION_AFTER_DAYS": "3"}, cwd=ROOT)
    d = timescale.declared(sqlfiles.load(s))
    assert d.hypertables["trades"] == ("time", "7 days")
    assert d.compression["market_data"] == ("symbol, timeframe", "time DESC")
    assert d.policies[("compression", "market_data")] == "3 days"
    assert d.policies[("retention", "system_logs")] == "30 days"
    assert ("retention", "trades") not in d.policies  # financial records are kept


def test_diff_reports_missing_different_extra_failed_and_paused():
    decl = timescale.Declared(
        {"md": ("time", "1 day")},
        {"md": ("symbol", "time DESC")},
        {("retention", "md"): "365 days", ("compression", "md"): "7 days"},
    )
    actual = timescale.Actual(
        {"md": ("time", "1 day"), "other": ("ts", "1 day")},
        {"md": ("symbol", '"time" DESC')},
        [
            {
                "job_id": 1,
                "kind": "retention",
                "table": "md",
                "interval": "400 days",
                "scheduled": True,
                "last_run_status": "Failed",
                "total_failures": 2,
                "problem": "failed",
            },
            {
                "job_id": 2,
                "kind": "retention",
                "table": "md",
                "interval": "365 days",
                "scheduled": False,
                "last_run_status": None,
                "total_failures": 0,
                "problem": "paused",
            },
        ],
    )
    same = lambda a, b: a == b  # noqa: E731
    got = {(d.item, d.problem) for d in timescale.diff(decl, actual, same)}
    assert got == {
        ("hypertable other", "extra"),
        ("retention policy md (job 2)", "extra"),
        ("retention policy md (job 1)", "different"),
        ("compression policy md", "missing"),
        ("job 1 (retention on md)", "failed"),
        ("job 2 (retention on md)", "paused"),
    }
