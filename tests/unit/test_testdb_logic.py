"""The pytest plugin's pure logic: labels, which databases are leftovers, checksums, job picking, Redis
claims, the summary line. (The plugin against real servers: tests/e2e/test_pytest_plugin.py.)"""

from __future__ import annotations

import pytest

from qbctl.db import testdb, testredis
from qbctl.db.files import SqlFile
from qbctl.errors import UsageError
from qbctl.pytest_plugin import summary

OWNER, OTHER = "0123456789abcdef", "fedcba9876543210"


def label(kind: str, owner: str = OWNER, **kw) -> testdb.Label:
    return testdb.Label(kind, owner, **kw)


def test_a_label_reads_back_and_nothing_else_is_one():
    lab = label("clone", checksum="qbctl_tpl_x", created=1.5, host="h", pid=7)
    assert testdb.parse_label(lab.text()) == lab
    for comment in ("", "qbctl-testdb", "qbctl-testdb {not json", "someone's database", 'qbctl-testdbx {"kind":1}'):
        assert testdb.parse_label(comment) is None


def found(name: str, lab: testdb.Label | None, template: bool = False) -> testdb.Found:
    return testdb.Found(name, lab, template)


def test_leftovers_are_the_dead_sessions_labelled_databases_and_nothing_else():
    held = {testdb.key_of(OWNER)}
    dbs = [
        found(f"qbctl_t_{OWNER}_1", label("clone")),  # a live session's clone
        found(f"qbctl_t_{OTHER}_3", label("clone", OTHER)),  # a dead session's clone
        found(f"qbctl_tplb_{'a' * 16}_{OTHER}", label("building", OTHER)),  # a dead session's build
        found(f"qbctl_t_{OTHER}_4", None),  # killed between CREATE and COMMENT: checked inside first
        found(f"qbctl_t_{OTHER}_5", label("clone", OWNER)),  # a label that does not match its name: not ours
        found("qbctl_t_backup", label("clone", OTHER)),  # not our name
        found("qb_trading_dev", None),
    ]
    dead, unlabelled = testdb.leftovers(dbs, held)
    assert [f.name for f in dead] == [f"qbctl_t_{OTHER}_3", f"qbctl_tplb_{'a' * 16}_{OTHER}"]
    assert [f.name for f in unlabelled] == [f"qbctl_t_{OTHER}_4"]


def test_templates_beyond_the_newest_few_go_unless_a_session_uses_them():
    def tpl(i: int) -> testdb.Found:
        return found(f"qbctl_tpl_{i:016x}", label("template", "", checksum=f"sum{i}", created=float(i)), True)

    templates = [tpl(i) for i in range(6)]  # created 0 (oldest) .. 5 (newest)
    in_use = {testdb.derived_key("use:sum1")}
    dead, _ = testdb.leftovers(templates, in_use)
    assert sorted(f.name for f in dead) == [f"qbctl_tpl_{i:016x}" for i in (0, 2)]
    assert testdb.KEEP_TEMPLATES == 3


def sql(name: str, text: str, kind: str = "schema") -> SqlFile:
    from pathlib import Path

    from qbctl.db.files import checksum

    return SqlFile(kind, name, Path(name), text, checksum(text), False)


def test_the_template_checksum_changes_with_what_goes_into_it_and_only_then():
    files = [sql("0001_a.sql", "CREATE TABLE a (id int);"), sql("010_p.sql", "SELECT 1;", "policy")]
    base = testdb.checksum(files, False, "2.28.3")
    assert testdb.checksum(list(files), False, "2.28.3") == base
    assert testdb.checksum([files[0], sql("010_p.sql", "SELECT 2;", "policy")], False, "2.28.3") != base
    assert testdb.checksum(files + [sql("0002_b.sql", "")], False, "2.28.3") != base
    assert testdb.checksum(files, True, None) != base
    assert testdb.checksum(files, False, "2.28.4") != base
    assert testdb.checksum(files, False, "2.28.3", seeded="5x10@2026-01-01") != base


JOBS = [
    (1000, "policy_compression", "public.market_data"),
    (1004, "policy_retention", "public.market_data"),
    (1007, "policy_refresh_continuous_aggregate", "public.market_data_5m"),
    (1010, "policy_compression", "public.market_data_5m"),
]


def test_jobs_are_picked_by_relation_and_kind_and_a_typo_says_what_there_is():
    assert testdb.pick_jobs(JOBS, "market_data", None) == [1000, 1004]
    assert testdb.pick_jobs(JOBS, "public.market_data_5m", "refresh") == [1007]
    assert testdb.pick_jobs(JOBS, None, "compression") == [1000, 1010]
    with pytest.raises(UsageError, match=r"no TimescaleDB policy job on market_dta .*refresh on market_data_5m"):
        testdb.pick_jobs(JOBS, "market_dta", None)
    with pytest.raises(UsageError, match="job kind 'compress'"):
        testdb.pick_jobs(JOBS, None, "compress")


def test_redis_claims_skip_the_urls_own_database_and_see_who_holds_what():
    assert testredis.candidates(16, 0)[:3] == [15, 14, 13] and 0 not in testredis.candidates(16, 0)
    assert 5 not in testredis.candidates(16, 5) and len(testredis.candidates(16, 5)) == 15
    clients = [
        {"name": f"qbctl-testdb-{OWNER}", "db": "0"},
        {"name": f"qbctl-testdb-{OTHER}-held", "db": "14"},
        {"name": f"qbctl-testdb-{OTHER}-db", "db": "13"},
        {"name": "backend", "db": "12"},
    ]
    assert testredis.alive(clients) == {OWNER, OTHER}
    assert testredis.held_elsewhere(clients, 14, OWNER)  # another session's standing claim
    assert not testredis.held_elsewhere(clients, 13, OWNER)  # only trying: its SET NX decides
    assert not testredis.held_elsewhere(clients, 14, OTHER)  # its own


def test_the_summary_line_says_how_each_template_was_had_and_what_cloning_cost():
    workers = [
        {"templates": {"qbctl_tpl_a": ("built", 2.04)}, "clone_seconds": [0.1, 0.3], "strategy": "FILE_COPY"},
        {"templates": {"qbctl_tpl_a": ("waited", 1.5)}, "clone_seconds": [0.2], "strategy": "FILE_COPY"},
    ]
    assert summary(workers) == (
        "qbctl: template qbctl_tpl_a built in 2.0s; 3 test databases cloned (FILE_COPY, median 200 ms)"
    )
    assert (
        summary([{"templates": {"qbctl_tpl_b": ("found", 0.0)}, "clone_seconds": [], "strategy": "WAL_LOG"}])
        == "qbctl: template qbctl_tpl_b found ready"
    )
    assert "built by another session (waited 1.5s)" in summary(workers[1:])
