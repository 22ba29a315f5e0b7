"""qbctl.libpq and the no-op migrate it serves, against the real PostgreSQL 15 the tests start."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from qbctl.db import libpq
from qbctl.db.migrate import LOCK_KEY
from tests.helpers import ROOT, free_port, no_traceback
from tests.integration.conftest import SECRET_PASSWORD
from tests.integration.test_migrate import env_for, migrate, tracking


def test_rows_come_back_as_text_with_null_as_none(database):
    with libpq.connect(database) as conn:
        assert conn.rows("SELECT 1, NULL::text, 'forty-two', 'é'") == [("1", None, "forty-two", "é")]
        assert conn.rows("SELECT x FROM generate_series(1, 3) x WHERE x > 1") == [("2",), ("3",)]
        assert conn.rows("SET application_name = 'x'") == []
        with pytest.raises(libpq.Failed):  # a failed statement
            conn.rows("SELECT * FROM no_such_table")
        assert conn.rows("SELECT current_setting('application_name')") == [("x",)]  # still usable


def test_no_server_or_a_wrong_password_is_none_never_an_exception(secret_database):
    assert libpq.connect(f"postgresql://u:pw@127.0.0.1:{free_port()}/db") is None
    assert libpq.connect(secret_database.replace("%40ss", "wrong")) is None
    with libpq.connect(secret_database) as conn:  # SCRAM, a password full of URL characters
        assert conn.rows("SELECT current_user") == [("qb_secret",)]


def _noop_imports(database, project, *args) -> tuple[dict, str]:
    """A no-op migrate's JSON and the modules it imported (python -X importtime)."""
    proc = migrate(database, project, "--without-timescaledb", *args, PYTHONPROFILEIMPORTTIME="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout), proc.stderr


def test_a_noop_migrate_is_answered_without_importing_psycopg(secret_database, project):
    first, imports = _noop_imports(secret_database, project)
    assert first["applied"] and "| psycopg\n" in imports  # work to do: the full path
    again, imports = _noop_imports(secret_database, project)
    assert "| psycopg\n" not in imports and "| qbctl.db.libpq\n" in imports
    assert "| pglast\n" not in imports  # nothing to split either
    assert again["applied"] == [] and again["up_to_date"] == len(first["applied"])
    assert again["skipped"] == first["skipped"] and again["database"] == first["database"]
    assert SECRET_PASSWORD not in json.dumps(again)
    dry, _ = _noop_imports(secret_database, project, "--dry-run")
    assert dry["dry_run"] and dry["would_apply"] == []


def test_the_quick_answer_steps_aside_for_an_edit_a_new_file_or_a_held_lock(database, project):
    assert migrate(database, project, "--without-timescaledb").returncode == 0
    (project / "sql" / "schema" / "0006_more.sql").write_text("CREATE TABLE more (id int);\n")
    result, imports = _noop_imports(database, project)
    assert [a["file"] for a in result["applied"]] == ["sql/schema/0006_more.sql"]
    assert ("schema", "0006_more.sql") in tracking(database)

    holder = psycopg.connect(database, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    threading.Timer(1.0, holder.close).start()  # closing the session releases its lock
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "qbctl", "db", "migrate", "--without-timescaledb"],
        env={**env_for(database), "PYTHONPATH": str(ROOT)},
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "holds the migration lock; waiting" in proc.stderr and time.monotonic() - started >= 0.9
    assert "nothing to apply" in proc.stdout
    no_traceback(proc)


def test_without_a_loadable_libpq_migrate_takes_the_full_path(database, project, monkeypatch):
    from qbctl.config.settings import load
    from qbctl.db import files as sqlfiles
    from qbctl.db import migrate as mig
    from qbctl.engine.runtime import Runtime

    settings = load(environ={"DATABASE_URL": database}, cwd=project)
    options = mig.MigrateOptions(without_timescaledb=True)
    rt = Runtime()
    first = mig.migrate(settings, options, rt=rt)
    local = sqlfiles.load(settings)
    assert mig._nothing_to_do(settings, local, options, rt) is not None
    monkeypatch.setattr(libpq, "_lib", None)  # looked for, none found (a psycopg without a libpq file)
    assert libpq.connect(database) is None
    assert mig._nothing_to_do(settings, local, options, rt) is None
    again = mig.migrate(settings, options, rt=rt)
    assert again.ok and again.applied == [] and again.up_to_date == len(first.applied)
