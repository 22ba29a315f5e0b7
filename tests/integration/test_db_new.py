"""qbctl db new against a real PostgreSQL 15: numbering, the marker, names that would sort before an applied file."""

from __future__ import annotations

import json

from tests.helpers import free_port, no_traceback, qbctl
from tests.integration.test_migrate import env_for, migrate, tables
from tests.integration.test_migration_cases import tracked

NO_TSDB = "--without-timescaledb"


def new(url, project, *args):
    return qbctl("db", "new", *args, env=env_for(url), cwd=project)


def test_the_next_number_a_marker_when_asked_and_the_file_runs_as_marked(database, project):
    assert migrate(database, project, NO_TSDB).returncode == 0
    proc = new(database, project, "Add audit table!")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "sql/schema/0007_add_audit_table.sql\n" and proc.stderr == ""
    created = project / "sql" / "schema" / "0007_add_audit_table.sql"
    assert created.read_text() == "-- add audit table\n\n"
    created.write_text(created.read_text() + "CREATE TABLE audit (id int);\n")
    marked = qbctl("db", "new", "index audit", "--no-transaction", "--json", env=env_for(database), cwd=project)
    out = json.loads(marked.stdout)
    assert marked.returncode == 0 and out["ok"] and out["name"] == "0008_index_audit.sql" and out["no_transaction"]
    path = project / out["path"]
    assert "-- qbctl: no-transaction\n" in path.read_text()
    path.write_text(path.read_text() + "CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_id ON audit (id);\n")
    applied = migrate(database, project, NO_TSDB)
    assert applied.returncode == 0, applied.stdout
    assert json.loads(applied.stdout)["one_by_one"] == {
        "sql/schema/0008_index_audit.sql": "marked `-- qbctl: no-transaction`"
    }
    assert "audit" in tables(database) and tracked(database, "0008_index_audit.sql") == [("applied", 1)]


def test_a_name_that_would_sort_before_an_applied_file_is_refused(database, project):
    assert migrate(database, project, NO_TSDB).returncode == 0
    before = sorted(p.name for p in (project / "sql" / "schema").iterdir())
    proc = new(database, project, "0003_fix_indicators")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        "error: sql/schema/0003_fix_indicators.sql would sort before 0006_text_columns.sql, "
        "which is applied: it would run after it here and before it on a new database; nothing was "
        "written"
    )
    assert lines[1] == "hint: leave the number out (qbctl db new fix_indicators) and the next one is taken"
    assert sorted(p.name for p in (project / "sql" / "schema").iterdir()) == before
    no_traceback(proc)
    # Applied here but not in this checkout (another branch's file): the next number comes after it.
    (project / "sql" / "schema" / "0007_other_branch.sql").write_text("CREATE TABLE other_branch (x int);\n")
    assert migrate(database, project, NO_TSDB).returncode == 0
    (project / "sql" / "schema" / "0007_other_branch.sql").unlink()
    assert new(database, project, "mine").stdout == "sql/schema/0008_mine.sql\n"
    refused = qbctl("db", "new", "0007_mine", "--json", env=env_for(database), cwd=project)
    assert refused.returncode == 2 and json.loads(refused.stdout)["error"]["code"] == "NAME_BEFORE_APPLIED"
    # A number after every applied file is the user's to choose, even one before a file not applied yet.
    assert new(database, project, "0100_later").returncode == 0
    assert new(database, project, "0050_between").stdout == "sql/schema/0050_between.sql\n"
    exists = new(database, project, "0050_between")
    assert exists.returncode == 2 and "exists already" in exists.stderr


def test_without_a_database_every_file_counts_as_applied_and_it_says_so(project):
    url = f"postgresql://qb_user:pw@127.0.0.1:{free_port()}/nowhere"
    proc = new(url, project, "offline")
    assert proc.returncode == 0 and proc.stdout == "sql/schema/0007_offline.sql\n"
    assert "checked against every file in sql/schema (the database did not answer" in proc.stderr
    assert new(url, project, "0006_a").returncode == 2


def test_a_project_without_its_own_schema_is_not_written_into(tmp_path, database):
    (tmp_path / ".env").write_text("")
    proc = new(database, tmp_path, "x")
    assert proc.returncode == 2 and "has no sql/schema of its own" in proc.stderr
    assert "cp -r" in proc.stderr and not (tmp_path / "sql").exists()
