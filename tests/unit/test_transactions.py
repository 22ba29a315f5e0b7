"""How a file runs with its own transaction control, and the fixes a refusal offers (pure)."""

from __future__ import annotations

import pytest

from qbctl.db import transactions as T
from qbctl.db.statements import split

MARK = "-- qbctl: no-transaction"


def plan(text: str, marker: str | None = None) -> T.Plan:
    return T.plan(split(text), marker)


def test_a_wrapped_file_is_one_transaction_of_its_body_with_the_wrappers_modes():
    assert plan("BEGIN;\nSELECT 1;\nSELECT 2;\nCOMMIT;") == T.Plan(None, [(1, 3, False)], "")
    assert (
        plan("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE;\nSELECT 1;\nEND;").modes
        == "ISOLATION LEVEL SERIALIZABLE, READ WRITE"
    )
    assert plan("begin work;\nSELECT 1;\ncommit work;").modes == ""
    assert plan("SELECT 1;\nSELECT 2;") == T.Plan(None, [(0, 2, False)], "")


def test_statement_by_statement_a_lone_commit_does_nothing_and_calls_run_alone():
    got = plan("SELECT 1;\nCOMMIT;\nCALL p();\nDO $$ BEGIN COMMIT; END $$;\nBEGIN;\nSELECT 2;\nCOMMIT;", MARK)
    assert got.stepwise == f"marked `{MARK}`"
    assert got.steps == [(0, 1, False), (1, 2, False), (2, 3, True), (3, 4, True), (4, 7, False)]


@pytest.mark.parametrize(
    "text,marker,line,fixes",
    [
        ("SELECT 1;\nCOMMIT;\nSELECT 2;", None, 2, ["remove the COMMIT at line 2", "put `-- qbctl: no-transaction`"]),
        (
            "BEGIN;\nSELECT 1;\nCOMMIT;\nSELECT 2;",
            None,
            3,
            [
                "move the COMMIT at line 3 to the end",
                "remove its transaction control statements (BEGIN at line 1, COMMIT at line 3)",
                "put `-- qbctl: no-transaction`",
            ],
        ),
        ("BEGIN;\nSELECT 1;", None, 1, ["end the file with a COMMIT", "remove the BEGIN at line 1"]),
        ("BEGIN;\nSELECT 1;\nROLLBACK;", None, 3, ["remove its transaction control statements"]),
        (
            "SELECT 1;\nBEGIN;\nSELECT 2;\nROLLBACK;",
            MARK,
            4,
            ["remove the ROLLBACK at line 4 and the BEGIN at line 2", "replace the ROLLBACK at line 4 with COMMIT"],
        ),
        (
            "BEGIN;\nCREATE INDEX CONCURRENTLY i ON t (x);\nCOMMIT;",
            None,
            2,
            ["remove the BEGIN at line 1 and its COMMIT", "move line 2 after the group's COMMIT"],
        ),
        ("PREPARE TRANSACTION 'x';", MARK, 1, ["remove the PREPARE at line 1"]),
    ],
)
def test_a_refusal_offers_only_the_fixes_that_plan(text, marker, line, fixes):
    with pytest.raises(T.Refused) as exc:
        plan(text, marker)
    assert split(text)[exc.value.index].line == line
    assert len(exc.value.fixes) == len(fixes)
    assert all(got.startswith(want) for got, want in zip(exc.value.fixes, fixes, strict=True)), exc.value.fixes


def test_db_new_numbers_files_as_the_folder_does():
    from qbctl.db.new import file_name
    from qbctl.errors import UsageError

    assert file_name("add audit", []) == "0001_add_audit.sql"
    assert file_name("Add-Audit table.sql", ["0001_a.sql", "0009_b.sql", "notes.sql"]) == "0010_add_audit_table.sql"
    assert file_name("x", ["001_a.sql"]) == "002_x.sql"
    assert file_name("x", ["20250101120000_a.sql"], now=1767225600) == "20260101000000_x.sql"
    assert file_name("x", ["20990101120000_a.sql"], now=1767225600) == "20990101120001_x.sql"
    assert file_name("0042_mine", ["0001_a.sql"]) == "0042_mine.sql"
    with pytest.raises(UsageError):
        file_name("!!", [])
