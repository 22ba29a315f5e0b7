"""Files with their own transaction control, on a real PostgreSQL 15: a file wrapped whole in BEGIN ... COMMIT
runs as one transaction with its tracking row; anything else is refused before it runs, and every fix the
refusal offers is followed here as a person would follow it (by editing the file's lines) and then works."""

from __future__ import annotations

import json
import re

import psycopg
import pytest

from tests.integration.test_migrate import migrate, tables
from tests.integration.test_migration_cases import add, rows, tracked

NO_TSDB = "--without-timescaledb"


def test_a_file_wrapped_in_begin_commit_runs_as_one_transaction_with_its_row(database, project):
    add(
        project,
        "0007_sqitch.sql",
        "-- Deploy audit (sqitch writes every deploy script this way)\nBEGIN;\n\n"
        "CREATE TABLE wrapped_a (x int);\nINSERT INTO wrapped_a VALUES (1);\n\nCOMMIT;\n",
    )
    add(
        project,
        "0008_start.sql",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE;\n"
        "DO $$ BEGIN IF current_setting('transaction_isolation') <> 'serializable' THEN\n"
        "  RAISE EXCEPTION 'the BEGIN''s modes were lost'; END IF; END $$;\n"
        "CREATE TABLE wrapped_b (x int);\nEND;\n",
    )
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert [a["file"] for a in out["applied"]][-2:] == ["sql/schema/0007_sqitch.sql", "sql/schema/0008_start.sql"]
    assert out["one_by_one"] == {}  # one transaction each, not statement by statement
    assert {"wrapped_a", "wrapped_b"} <= tables(database)
    assert tracked(database, "0007_sqitch.sql") == tracked(database, "0008_start.sql") == [("applied", None)]
    # The tracking row is written inside the file's transaction: it commits with the file or not at all.
    add(
        project,
        "0009_fails.sql",
        "BEGIN;\nCREATE TABLE wrapped_c (x int);\nINSERT INTO wrapped_c VALUES (1);\n"
        "INSERT INTO wrapped_c VALUES ('x');\nCOMMIT;\n",
    )
    failed = migrate(database, project, NO_TSDB)
    err = json.loads(failed.stdout)["error"]
    assert failed.returncode == 1 and err["code"] == "MIGRATION_FAILED" and err["line"] == 4
    assert "rolled back" in err["hint"]
    assert "wrapped_c" not in tables(database) and tracked(database, "0009_fails.sql") == []


def test_a_file_wrapped_in_begin_commit_is_one_transaction_with_the_next_migrate_too(database, project):
    """The lock session's advisory lock and the work session's transaction: a wrapped file's COMMIT is not sent,
    so nothing commits before the tracking row."""
    add(project, "0006_w.sql", "BEGIN;\nCREATE TABLE w1 (x int);\nCOMMIT;\n")
    assert migrate(database, project, NO_TSDB).returncode == 0
    again = migrate(database, project, NO_TSDB)
    assert again.returncode == 0 and json.loads(again.stdout)["applied"] == []


def follow(text: str, fix: str) -> str:
    """Edit the file as the words of a fix say, line by line (each statement here is on a line of its own)."""
    lines = text.rstrip("\n").split("\n")
    drop: set[int] = set()
    if m := re.fullmatch(r"remove the (\w+) at line (\d+)(?: \(.*\))?", fix):
        drop.add(int(m.group(2)))
    elif m := re.fullmatch(r"remove the (\w+) at line (\d+) and the BEGIN at line (\d+)", fix):
        drop |= {int(m.group(2)), int(m.group(3))}
    elif m := re.fullmatch(r"remove its transaction control statements \((.*)\): .*", fix):
        drop |= {int(n) for n in re.findall(r"at line (\d+)", m.group(1))}
    elif m := re.fullmatch(r"remove the BEGIN at line (\d+) and its COMMIT, .*", fix):
        begin = int(m.group(1))
        commit = next(n for n in range(begin + 1, len(lines) + 1) if lines[n - 1].strip().upper() == "COMMIT;")
        drop |= {begin, commit}
    elif m := re.fullmatch(r"move the (\w+) at line (\d+) to the end of the file .*", fix):
        n = int(m.group(2))
        return "\n".join(lines[: n - 1] + lines[n:] + [lines[n - 1]]) + "\n"
    elif m := re.fullmatch(r"move line (\d+) after the group's COMMIT", fix):
        n = int(m.group(1))
        moved, rest = lines[n - 1], lines[: n - 1] + lines[n:]
        at = next(k for k in range(n - 1, len(rest)) if rest[k].strip().upper() == "COMMIT;")
        return "\n".join(rest[: at + 1] + [moved] + rest[at + 1 :]) + "\n"
    elif re.fullmatch(r"put `-- qbctl: no-transaction` in the file's first comment lines .*", fix):
        return "-- qbctl: no-transaction\n" + text
    elif re.fullmatch(r"(?:end the file|end the group) with a COMMIT.*", fix):
        return text.rstrip("\n") + "\nCOMMIT;\n"
    elif m := re.fullmatch(r"put a COMMIT before line (\d+) .*", fix):
        n = int(m.group(1))
        return "\n".join(lines[: n - 1] + ["COMMIT;"] + lines[n - 1 :]) + "\n"
    elif m := re.fullmatch(r"replace the (\w+) at line (\d+) with COMMIT", fix):
        n = int(m.group(2))
        return "\n".join(lines[: n - 1] + ["COMMIT;"] + lines[n:]) + "\n"
    else:
        raise AssertionError(f"a fix this test cannot follow: {fix}")
    return "\n".join(x for k, x in enumerate(lines, 1) if k not in drop) + "\n"


MARK = "-- qbctl: no-transaction\n"
# (text, the line refused, what is refused, how many fixes are offered)
REFUSED = {
    "commit_in_the_middle": (
        "CREATE TABLE t1 (x int);\nCOMMIT;\nCREATE TABLE t2 (x int);\n",
        2,
        "COMMIT in a file that qbctl runs in one transaction",
        2,
    ),
    "begin_then_commit_in_the_middle": (
        "BEGIN;\nCREATE TABLE t1 (x int);\nCOMMIT;\nCREATE TABLE t2 (x int);\n",
        3,
        "COMMIT in a file that qbctl runs in one transaction",
        3,
    ),
    "begin_without_commit": (
        "BEGIN;\nCREATE TABLE t1 (x int);\nCREATE TABLE t2 (x int);\n",
        1,
        "BEGIN without a COMMIT at the end of the file",
        2,
    ),
    "rollback": (
        "BEGIN;\nCREATE TABLE t1 (x int);\nROLLBACK;\n",
        3,
        "ROLLBACK in a file that qbctl runs in one transaction",
        1,
    ),
    "concurrently_inside_the_wrapper": (
        "BEGIN;\nCREATE TABLE t1 (x int);\nCREATE INDEX CONCURRENTLY t1_x ON t1 (x);\nCOMMIT;\n",
        3,
        "CREATE INDEX CONCURRENTLY inside the BEGIN ... COMMIT group of line 1, which is a transaction",
        2,
    ),
    "begin_inside_a_group": (
        MARK + "BEGIN;\nCREATE TABLE t1 (x int);\nBEGIN;\nCREATE TABLE t2 (x int);\nCOMMIT;\n",
        4,
        "BEGIN inside a BEGIN ... COMMIT group",
        2,
    ),
    "rollback_in_a_group": (
        MARK + "CREATE TABLE t1 (x int);\nBEGIN;\nCREATE TABLE t2 (x int);\nROLLBACK;\n",
        5,
        "ROLLBACK in a migration",
        2,
    ),
    "group_without_commit": (
        MARK + "CREATE TABLE t1 (x int);\nBEGIN;\nCREATE TABLE t2 (x int);\n",
        3,
        "BEGIN without a COMMIT",
        2,
    ),
}
CASES = [(name, k) for name, (_, _, _, n) in REFUSED.items() for k in range(n)]


@pytest.mark.parametrize("name,k", CASES, ids=[f"{n}-fix{k + 1}" for n, k in CASES])
def test_each_fix_a_refusal_offers_works_when_followed_literally(database, project, name, k):
    text, line, what, count = REFUSED[name]
    add(project, "0006_first.sql", "CREATE TABLE first_of_run (x int);\n")
    add(project, "0007_x.sql", text)
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 1, proc.stdout
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "MIGRATION_REFUSED" and err["line"] == line
    assert err["message"] == f"sql/schema/0007_x.sql:{line}: {what}; nothing was run"
    assert len(err["fixes"]) == count, err["fixes"]
    assert err["hint"] == "fix it: " + "; or ".join(err["fixes"])
    assert "first_of_run" not in tables(database)  # refused before anything of the run
    fixed = follow(text, err["fixes"][k])
    add(project, "0007_x.sql", fixed)
    again = migrate(database, project, NO_TSDB)
    assert again.returncode == 0, f"{err['fixes'][k]}:\n{fixed}\n{again.stdout}"
    assert tracked(database, "0007_x.sql")[0][0] == "applied"
    assert "t1" in tables(database) or name == "rollback_in_a_group" and "t2" in tables(database)


def test_a_lone_commit_in_a_file_run_statement_by_statement_does_nothing_as_under_psql(database, project):
    add(project, "0006_lone.sql", MARK + "CREATE TABLE l1 (x int);\nCOMMIT;\nCREATE TABLE l2 (x int);\n")
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 0, proc.stdout
    assert {"l1", "l2"} <= tables(database) and tracked(database, "0006_lone.sql") == [("applied", 3)]


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_hint_of_a_statement_that_cannot_run_in_a_transaction_works_when_followed(database, project, wrapped):
    body = (
        "CREATE TABLE steps (x int);\n"
        "CREATE PROCEDURE step() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO steps VALUES (1); COMMIT; END $$;\n"
        "CALL step();\n"
    )
    text = "BEGIN;\n" + body + "COMMIT;\n" if wrapped else body
    add(project, "0006_proc.sql", text)
    proc = migrate(database, project, NO_TSDB)
    err = json.loads(proc.stdout)["error"]
    assert proc.returncode == 1 and err["sqlstate"] == "2D000" and err["line"] == (4 if wrapped else 3)
    if wrapped:
        m = re.search(
            r"the file's own BEGIN \(line (\d+)\) \.\.\. COMMIT \(line (\d+)\) makes one: remove those two "
            r"lines and put `-- qbctl: no-transaction` in the file's first comment lines",
            err["hint"],
        )
        assert m, err["hint"]
        drop = {int(m.group(1)), int(m.group(2))}
        text = "".join(x for n, x in enumerate(text.splitlines(keepends=True), 1) if n not in drop)
    else:
        assert "put `-- qbctl: no-transaction` in the file's first comment lines" in err["hint"]
    add(project, "0006_proc.sql", "-- qbctl: no-transaction\n" + text)
    again = migrate(database, project, NO_TSDB)
    assert again.returncode == 0, again.stdout
    assert rows(database, "SELECT x FROM steps") == [(1,)]


def test_a_wrapped_file_applied_by_an_older_qbctl_is_not_an_edit(database, project):
    """Nothing about the tracking changed: the file's checksum is of its text."""
    add(project, "0006_marked.sql", MARK + "BEGIN;\nCREATE TABLE m1 (x int);\nCOMMIT;\n")
    assert migrate(database, project, NO_TSDB).returncode == 0
    with psycopg.connect(database) as conn:
        ((state, done, sums),) = conn.execute(
            "SELECT state, statements_done, statement_checksums FROM qbctl.migrations WHERE name = '0006_marked.sql'"
        ).fetchall()
    assert (state, done, len(sums)) == ("applied", 3, 3)
    assert json.loads(migrate(database, project, NO_TSDB).stdout)["applied"] == []
