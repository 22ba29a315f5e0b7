"""What real projects' migration folders need, on a real PostgreSQL 15: files that cannot run in a transaction,
their own transaction control, settings that must not leak, errors as psql gives them, encodings."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.helpers import no_traceback, qbctl
from tests.integration.conftest import _database
from tests.integration.test_migrate import env_for, migrate, tables

NO_TSDB = "--without-timescaledb"


def add(project, name: str, text: str, sub: str = "schema"):
    path = project / "sql" / sub / name
    path.write_text(text)
    return path


def rows(url, sql, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def tracked(url, name):
    return rows(url, "SELECT state, statements_done FROM qbctl.migrations WHERE name = %s", name)


NON_TX = """-- Backfill and an index built without locking writers.
CREATE TABLE audit (id int PRIMARY KEY, note text);
INSERT INTO audit VALUES (1, 'first');   -- applied twice would fail: the key exists
CREATE INDEX CONCURRENTLY audit_note_idx ON audit (note);
INSERT INTO audit VALUES (2, 'second');
SELECT * FROM no_such_table;  -- the mistake
INSERT INTO audit VALUES (3, 'third');
"""


def test_a_non_transactional_file_stops_part_way_then_continues_after_the_fix(database, project):
    assert migrate(database, project, NO_TSDB).returncode == 0
    add(project, "0006_audit.sql", NON_TX)
    add(project, "0007_after.sql", "CREATE TABLE after_audit (x int);\n")
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 1, proc.stdout
    out = json.loads(proc.stdout)
    err = out["error"]
    assert err["code"] == "MIGRATION_FAILED" and err["file"] == "sql/schema/0006_audit.sql"
    assert err["line"] == 6 and err["statement"] == 5 and err["committed_statements"] == 4
    assert err["message"].startswith('sql/schema/0006_audit.sql:6: 42P01 relation "no_such_table" does not exist')
    assert "statements 1-4 of 6 are committed" in err["hint"] and "continues at statement 5" in err["hint"]
    assert err["applied"] == [] and out["applied"] == []  # nothing this run finished before it
    assert out["one_by_one"] == {
        "sql/schema/0006_audit.sql": "CREATE INDEX CONCURRENTLY (line 4) cannot run in a transaction"
    }
    assert rows(database, "SELECT id FROM audit ORDER BY id") == [(1,), (2,)]
    assert tracked(database, "0006_audit.sql") == [("partial", 4)] and "after_audit" not in tables(database)
    status = qbctl("db", "status", "--json", "--exit-code", env=env_for(database), cwd=project)
    assert status.returncode == 1
    state = {m["file"]: m for m in json.loads(status.stdout)["migrations"]}["sql/schema/0006_audit.sql"]
    assert state["state"] == "partial" and "continues at statement 5 (line 6)" in state["reason"]
    human = qbctl("db", "migrate", NO_TSDB, env=env_for(database), cwd=project)
    assert "runs statement by statement: CREATE INDEX CONCURRENTLY (line 4)" in human.stderr
    assert "error: sql/schema/0006_audit.sql:6: 42P01" in human.stderr and "statements 1-4 of 6" in human.stderr

    # An edit to a committed statement is refused; the fix of the failed one goes through.
    add(project, "0006_audit.sql", NON_TX.replace("'first'", "'1st'"))
    refused = migrate(database, project, NO_TSDB)
    assert refused.returncode == 1
    err = json.loads(refused.stdout)["error"]
    assert (
        err["code"] == "MIGRATION_CHANGED"
        and "statement 2 (line 3) was committed and has been edited" in err["message"]
    )
    add(project, "0006_audit.sql", NON_TX.replace("SELECT * FROM no_such_table;", "SELECT count(*) FROM audit;"))
    fixed = migrate(database, project, NO_TSDB)
    assert fixed.returncode == 0, fixed.stdout
    applied = json.loads(fixed.stdout)["applied"]
    assert [(a["file"], a["action"]) for a in applied] == [
        ("sql/schema/0006_audit.sql", "continued"),
        ("sql/schema/0007_after.sql", "applied"),
    ]
    assert applied[0]["statements"] == 2
    assert rows(database, "SELECT id FROM audit ORDER BY id") == [(1,), (2,), (3,)]  # none twice
    assert tracked(database, "0006_audit.sql") == [("applied", 6)]
    assert rows(database, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'audit_note_idx'::regclass") == [(True,)]
    assert json.loads(migrate(database, project, NO_TSDB).stdout)["applied"] == []


def test_other_tools_markers_and_sections(database, project):
    add(
        project,
        "0006_goose.sql",
        "-- +goose Up\n-- +goose NO TRANSACTION\nCREATE TABLE g (x int);\nVACUUM g;\n-- +goose Down\nDROP TABLE g;\n",
    )
    add(
        project,
        "0007_dbmate.sql",
        "-- migrate:up transaction:false\nCREATE TABLE d (x int);\n\n-- migrate:down\nDROP TABLE d;\n",
    )
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["one_by_one"] == {
        "sql/schema/0006_goose.sql": "marked `-- +goose NO TRANSACTION`",
        "sql/schema/0007_dbmate.sql": "marked `-- migrate:up transaction:false`",
    }
    assert {"g", "d"} <= tables(database)  # the Down sections did not run


def test_a_commit_in_a_transactional_file_is_refused_before_anything_runs(database, project):
    assert migrate(database, project, NO_TSDB).returncode == 0
    add(project, "0006_first.sql", "CREATE TABLE first_of_run (x int);\n")
    add(
        project, "0007_commit.sql", "CREATE TABLE before_commit (x int);\nCOMMIT;\nCREATE TABLE after_commit (x int);\n"
    )
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "MIGRATION_REFUSED" and err["line"] == 2
    assert err["message"] == (
        "sql/schema/0007_commit.sql:2: COMMIT in a file that qbctl runs in one transaction; nothing was run"
    )
    assert "-- qbctl: no-transaction" in err["hint"] and "remove the COMMIT at line 2" in err["hint"]
    assert not {"first_of_run", "before_commit", "after_commit"} & tables(database)
    # Marked, its BEGIN ... COMMIT group runs as one transaction and the file goes through.
    add(
        project,
        "0007_commit.sql",
        "-- qbctl: no-transaction\nCREATE TABLE before_commit (x int);\nBEGIN;\n"
        "CREATE TABLE in_group (x int);\nINSERT INTO in_group VALUES (1);\nCOMMIT;\n",
    )
    ok = migrate(database, project, NO_TSDB)
    assert ok.returncode == 0, ok.stdout
    assert {"first_of_run", "before_commit", "in_group"} <= tables(database)


def test_a_failing_group_is_rolled_back_as_a_whole(database, project):
    add(
        project,
        "0006_group.sql",
        "-- qbctl: no-transaction\nCREATE TABLE g1 (x int);\nBEGIN;\n"
        "CREATE TABLE g2 (x int);\nINSERT INTO g2 VALUES ('x');\nCOMMIT;\n",
    )
    proc = migrate(database, project, NO_TSDB)
    err = json.loads(proc.stdout)["error"]
    assert proc.returncode == 1 and err["line"] == 5 and err["committed_statements"] == 1
    assert "g1" in tables(database) and "g2" not in tables(database)


def test_nothing_a_file_sets_reaches_the_next_file(database, project):
    add(
        project,
        "0006_sets.sql",
        "CREATE SCHEMA elsewhere;\nSET search_path = elsewhere;\n"
        "SET statement_timeout = '20ms';\nCREATE TABLE here_by_design (x int);\n",
    )
    add(project, "0007_next.sql", "CREATE TABLE leak_probe (x int);\nSELECT pg_sleep(0.1);\n")
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 0, proc.stdout
    where = dict(
        rows(
            database, "SELECT tablename, schemaname FROM pg_tables WHERE tablename IN ('here_by_design', 'leak_probe')"
        )
    )
    assert where == {"here_by_design": "elsewhere", "leak_probe": "public"}


RUNTIME = """CREATE TABLE money (amount numeric);
CREATE FUNCTION check_money() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT count(*) FROM money) = 0 THEN
    RAISE EXCEPTION 'no money' USING DETAIL = 'the table is empty', HINT = 'seed it first';
  END IF;
END $$;

SELECT check_money();
"""


def test_a_runtime_error_has_the_line_detail_hint_and_context(database, project):
    add(project, "0007_ok.sql", "CREATE TABLE committed_first (x int);\n")
    add(project, "0008_runtime.sql", RUNTIME)
    proc = migrate(database, project, NO_TSDB)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    err = out["error"]
    assert err["line"] == 9 and err["sqlstate"] == "P0001" and err["detail"] == "the table is empty"
    assert err["server_hint"] == "seed it first" and "PL/pgSQL function check_money() line 4 at RAISE" in err["context"]
    assert (
        "sql/schema/0007_ok.sql" in err["applied"]
        and [a["file"] for a in out["applied"]][-1] == "sql/schema/0007_ok.sql"
    )
    assert "committed_first" in tables(database) and "money" not in tables(database)
    human = qbctl("db", "migrate", NO_TSDB, env=env_for(database), cwd=project)
    lines = human.stderr.splitlines()
    assert lines[0] == "error: sql/schema/0008_runtime.sql:9: P0001 no money"
    assert lines[1:4] == [
        "  DETAIL: the table is empty",
        "  HINT: seed it first",
        "  CONTEXT: PL/pgSQL function check_money() line 4 at RAISE",
    ]
    assert lines[4].startswith("hint: the file was rolled back")
    no_traceback(human)


def test_an_undetected_statement_that_needs_no_transaction_gets_the_hint(database, project):
    add(
        project, "0006_proc.sql", "CREATE PROCEDURE step() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$;\nCALL step();\n"
    )
    proc = migrate(database, project, NO_TSDB)
    err = json.loads(proc.stdout)["error"]
    assert proc.returncode == 1 and err["sqlstate"] == "2D000" and err["line"] == 2
    assert "-- qbctl: no-transaction" in err["hint"]


def test_server_warnings_are_shown_and_notices_with_verbose(database, project):
    add(project, "0006_talk.sql", "SELECT 1;\nDO $$ BEGIN RAISE WARNING 'careful'; RAISE NOTICE 'fyi'; END $$;\n")
    quiet = qbctl("db", "migrate", NO_TSDB, env=env_for(database), cwd=project)
    assert quiet.returncode == 0
    assert "warning: sql/schema/0006_talk.sql:2: careful" in quiet.stderr and "fyi" not in quiet.stderr
    add(project, "0007_talk.sql", "DO $$ BEGIN RAISE NOTICE 'fyi'; END $$;\n")
    loud = qbctl("db", "migrate", NO_TSDB, "--verbose", "--json", env=env_for(database), cwd=project)
    assert loud.returncode == 0 and json.loads(loud.stdout)["ok"]
    assert "sql/schema/0007_talk.sql:1: NOTICE: fyi" not in loud.stderr  # --json: warnings only
    add(project, "0008_talk.sql", "DO $$ BEGIN RAISE NOTICE 'fyi'; END $$;\n")
    verbose = qbctl("db", "migrate", NO_TSDB, "-v", env=env_for(database), cwd=project)
    assert "sql/schema/0008_talk.sql:1: NOTICE: fyi" in verbose.stderr


def test_a_latin1_file_is_named_with_its_line_and_the_fix(database, project):
    (project / "sql" / "schema" / "0006_latin1.sql").write_bytes(
        "-- Données de référence\nINSERT INTO positions VALUES ('caf\xe9', '1', 1, 1);\n".encode("latin-1")
    )
    proc = qbctl("db", "migrate", NO_TSDB, env=env_for(database), cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "error: sql/schema/0006_latin1.sql:1: not UTF-8 (byte 0xe9 at column 8)"
    assert "iconv -f latin1 -t utf8" in proc.stderr and len(proc.stderr.splitlines()) == 2
    no_traceback(proc)


def test_an_old_tracking_table_is_upgraded_and_read(database, project):
    assert migrate(database, project, NO_TSDB).returncode == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE qbctl.migrations DROP COLUMN state, DROP COLUMN statements_done,"
            " DROP COLUMN statement_checksums"
        )
    noop = migrate(database, project, NO_TSDB)  # the libpq path reads the old table as it is
    assert noop.returncode == 0 and json.loads(noop.stdout)["applied"] == []
    status = qbctl("db", "status", "--json", env=env_for(database), cwd=project)
    assert status.returncode == 0, status.stdout
    states = {m["file"]: m["state"] for m in json.loads(status.stdout)["migrations"]}
    assert states["sql/schema/0002_market_data.sql"] == states["sql/schema/0005_performance_and_logs.sql"] == "applied"
    add(project, "0006_new.sql", "CREATE TABLE brand_new (x int);\n")
    assert [a["file"] for a in json.loads(migrate(database, project, NO_TSDB).stdout)["applied"]] == [
        "sql/schema/0006_new.sql"
    ]
    assert tracked(database, "0006_new.sql") == [("applied", None)]


@pytest.fixture
def sql_ascii_database(pg_server):
    """A database made as under LANG=C: SQL_ASCII, the driver's text then comes back as bytes by default."""
    yield from _database(pg_server, "TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'")


def test_a_sql_ascii_database_keeps_its_applied_files_applied(sql_ascii_database, project, pg_server):
    url = sql_ascii_database
    extra = () if pg_server["timescaledb"] else (NO_TSDB,)
    add(project, "0006_korean.sql", "-- 한국어 주석\nINSERT INTO positions VALUES ('삼성', '005930', 1, 1);\n")
    first = migrate(url, project, *extra)
    assert first.returncode == 0, first.stdout + first.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW server_encoding").fetchone()[0] == b"SQL_ASCII"  # bytes: the trap itself
    add(project, "0007_new.sql", "CREATE TABLE one_more (x int);\n")
    second = migrate(url, project, *extra)
    assert second.returncode == 0
    assert [a["file"] for a in json.loads(second.stdout)["applied"]] == ["sql/schema/0007_new.sql"]
    status = qbctl("db", "status", "--json", env=env_for(url), cwd=project)
    assert status.returncode == 0, status.stdout + status.stderr
    assert {m["state"] for m in json.loads(status.stdout)["migrations"]} <= {"applied", "skipped"}
    if pg_server["timescaledb"]:
        verify = qbctl("db", "verify", "--json", env=env_for(url), cwd=project)
        assert verify.returncode == 0, verify.stdout
    health = qbctl("health", "--json", env=env_for(url, QBCTL_PROJECT="qbtest-none"), cwd=project)
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    assert checks["postgres"]["ok"] and checks["postgres"]["data"]["server_version"].startswith("15.")
    assert checks["migrations"]["ok"], checks["migrations"]
    with psycopg.connect(url, client_encoding="UTF8") as conn:
        assert conn.execute("SELECT strategy FROM positions").fetchone()[0] == "삼성"
