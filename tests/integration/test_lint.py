"""db lint's rules against real TimescaleDB 2.28.3 with its scheduler on: what a rule calls an error fails there
(or locks), first with no compressed chunk, then with the compression policy's own job run; the safe way passes."""

from __future__ import annotations

import json

import psycopg
import pytest

from qbctl.db import catalog, lint
from qbctl.db.connect import psycopg_rows
from qbctl.db.statements import split
from tests.helpers import qbctl
from tests.integration.test_migrate import env_for, migrate
from tests.integration.test_migration_cases import add

SETUP = """
CREATE TABLE other (id int PRIMARY KEY);
INSERT INTO other VALUES (1);
CREATE TABLE md (time timestamptz NOT NULL, symbol text NOT NULL, timeframe text NOT NULL, open numeric,
                 close numeric, volume bigint, note varchar(10));
SELECT create_hypertable('md', by_range('time', INTERVAL '1 day'));
ALTER TABLE md SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol, timeframe',
                    timescaledb.compress_orderby = 'time DESC');
-- paused from the start: the scheduler would run it at once, and this state is the one without compressed chunks
SELECT alter_job(add_compression_policy('md', INTERVAL '7 days'), scheduled => false);
INSERT INTO md SELECT t, s, '1m', 1, 2, 3, 'x'
  FROM generate_series(now() - INTERVAL '20 days', now(), INTERVAL '10 minutes') t, (VALUES ('A'), ('B')) v(s);
CREATE MATERIALIZED VIEW md_1h WITH (timescaledb.continuous) AS
  SELECT time_bucket('1 hour', time) AS bucket, symbol, max(close) AS hi FROM md GROUP BY 1, 2 WITH NO DATA;
CREATE TABLE plain (id int, v text);
INSERT INTO plain SELECT g, 'x' FROM generate_series(1, 1000) g;
"""


@pytest.fixture
def tsdb(scheduler_database):
    with psycopg.connect(scheduler_database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        with conn.transaction():
            conn.execute(SETUP)
    return scheduler_database


def compress_by_policy(url: str) -> int:
    """Run the compression policy's own job, as the scheduler would after 7 days; compressed chunks after it."""
    with psycopg.connect(url, autocommit=True) as conn:
        ((job,),) = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
            " AND hypertable_name = 'md'"
        ).fetchall()
        conn.execute(f"CALL run_job({job})")
        return conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'md' AND is_compressed"
        ).fetchone()[0]


def findings(url: str, sql: str) -> dict[str, str]:
    """rule -> severity of lint's findings on `sql` as a pending file, with the live catalog of `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        cat = catalog.read(psycopg_rows(conn), "test")
    f = lint.LintFile("sql/schema/0099_t.sql", "schema", split(sql))
    return {x.rule: x.severity for x in lint.check([f], cat, {f.label})}


def outcome(url: str, sql: str) -> str:
    """'ok', or the server's error, for `sql` in a transaction that is rolled back either way."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            with conn.transaction():
                conn.execute(sql)
                raise _Undo
        except _Undo:
            return "ok"
        except psycopg.Error as exc:
            return str(exc).splitlines()[0]


class _Undo(Exception):
    pass


# rule, statement, what the server says with compressed chunks, the safe way (passes with compressed chunks)
FAILS_WITH_COMPRESSED_CHUNKS = [
    (
        "alter-type-compressed",
        "ALTER TABLE md ALTER COLUMN volume TYPE numeric",
        "operation not supported on hypertables with compressed chunks",
        "SELECT decompress_chunk(c, true) FROM show_chunks('md') c; ALTER TABLE md ALTER COLUMN volume TYPE numeric",
    ),
    (
        "disable-columnstore-compressed",
        "ALTER TABLE md SET (timescaledb.compress = false)",
        "cannot disable columnstore on hypertable with columnstore chunks",
        "SELECT remove_compression_policy('md', if_exists => true); SELECT decompress_chunk(c, true) FROM "
        "show_chunks('md') c; ALTER TABLE md SET (timescaledb.compress = false)",
    ),
]
# rule, statement, what the server says in both states, the safe way
FAILS_ALWAYS = [
    (
        "unique-without-partition-column",
        "ALTER TABLE md ADD CONSTRAINT u UNIQUE (symbol)",
        'cannot create a unique index without the column "time" (used in partitioning)',
        "CREATE UNIQUE INDEX ui ON md (symbol, timeframe, time)",
    ),
    (
        "unique-without-partition-column",
        "CREATE UNIQUE INDEX ui ON md (symbol, timeframe)",
        'cannot create a unique index without the column "time" (used in partitioning)',
        "ALTER TABLE md ADD CONSTRAINT u UNIQUE (symbol, timeframe, time)",
    ),
    (
        "nonconstant-default-columnstore",
        "ALTER TABLE md ADD COLUMN a uuid DEFAULT gen_random_uuid()",
        "cannot add column with non-constant default expression to a hypertable that has columnstore enabled",
        "ALTER TABLE md ADD COLUMN a uuid; ALTER TABLE md ALTER COLUMN a SET DEFAULT gen_random_uuid()",
    ),
    (
        "column-constraint-columnstore",
        "ALTER TABLE md ADD COLUMN a int REFERENCES other (id)",
        "cannot add column with constraints to a hypertable that has columnstore enabled",
        "ALTER TABLE md ADD COLUMN a int; ALTER TABLE md ADD CONSTRAINT md_a FOREIGN KEY (a) REFERENCES other (id) "
        "NOT VALID",
    ),
    (
        "drop-segmentby-column",
        "ALTER TABLE md DROP COLUMN timeframe",
        "cannot drop orderby or segmentby column",
        "ALTER TABLE md SET (timescaledb.compress_segmentby = 'symbol'); SELECT decompress_chunk(c, true) FROM "
        "show_chunks('md') c; ALTER TABLE md DROP COLUMN timeframe",
    ),
    (
        "cagg-column",
        "ALTER TABLE md DROP COLUMN close",
        "cannot drop desired object(s) because other objects depend",
        "DROP MATERIALIZED VIEW md_1h; ALTER TABLE md DROP COLUMN close",
    ),
    (
        "concurrent-index-hypertable",
        "CREATE INDEX CONCURRENTLY i ON md (open)",
        "hypertables do not support concurrent index creation",
        None,
    ),
    (
        "create-hypertable-with-data",
        "SELECT create_hypertable('plain', by_range('id', 100))",
        'table "plain" is not empty',
        "SELECT create_hypertable('plain', by_range('id', 100), migrate_data => true)",
    ),
]


@pytest.mark.parametrize(
    "rule,sql,error,safe", FAILS_WITH_COMPRESSED_CHUNKS, ids=[r[0] for r in FAILS_WITH_COMPRESSED_CHUNKS]
)
def test_what_fails_once_the_policy_compressed_a_chunk_is_an_error_before_it(tsdb, rule, sql, error, safe):
    # No compressed chunk yet: the statement passes here, as in CI; lint already says what the VM will answer.
    assert outcome(tsdb, sql) == "ok"
    assert findings(tsdb, sql).get(rule) == "error"
    assert compress_by_policy(tsdb) > 0
    assert error in outcome(tsdb, sql)
    assert findings(tsdb, sql).get(rule) == "error"
    assert outcome(tsdb, safe) == "ok", safe
    assert rule not in findings(tsdb, safe)


@pytest.mark.parametrize("compressed", [False, True], ids=["no-compressed-chunk", "compressed-chunks"])
@pytest.mark.parametrize("rule,sql,error,safe", FAILS_ALWAYS, ids=[r[0] + "-" + r[1].split()[0] for r in FAILS_ALWAYS])
def test_what_fails_with_or_without_compressed_chunks_is_an_error(tsdb, rule, sql, error, safe, compressed):
    if compressed:
        assert compress_by_policy(tsdb) > 0
    assert error in outcome(tsdb, sql)
    assert findings(tsdb, sql).get(rule) == "error"
    if safe:
        assert outcome(tsdb, safe) == "ok", safe
        assert findings(tsdb, safe).get(rule) != "error"  # a warning may stay: migrate_data locks


def test_a_column_a_continuous_aggregate_reads_cannot_change_type(tsdb):
    sql = "ALTER TABLE md ALTER COLUMN close TYPE float8"
    assert "cannot alter type of a column used by a view or rule" in outcome(tsdb, sql)
    assert findings(tsdb, sql) == {"cagg-column": "error", "alter-type-compressed": "error"}
    safe = "DROP MATERIALIZED VIEW md_1h; ALTER TABLE md ALTER COLUMN close TYPE float8"
    assert outcome(tsdb, safe) == "ok"  # no compressed chunk yet; with them, decompress too (the other rule)


def test_update_over_compressed_chunks_past_the_limit_fails(tsdb):
    with psycopg.connect(tsdb, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET timescaledb.max_tuples_decompressed_per_dml_transaction = 100')
    assert compress_by_policy(tsdb) > 0
    sql = "UPDATE md SET close = 5"
    assert "tuple decompression limit exceeded by operation" in outcome(tsdb, sql)
    assert findings(tsdb, sql) == {"dml-compressed": "error"}
    recent = "UPDATE md SET close = 5 WHERE time > now() - INTERVAL '1 day'"
    assert outcome(tsdb, recent) == "ok" and findings(tsdb, recent) == {}
    by_segment = "DELETE FROM md WHERE symbol = 'A'"  # whole batches: nothing decompressed
    assert outcome(tsdb, by_segment) == "ok" and findings(tsdb, by_segment) == {"dml-compressed": "warning"}


def _blocks_an_insert(url: str, build: str, insert: str) -> str:
    """Whether an INSERT from another session waits while `build` is in an open transaction."""
    with psycopg.connect(url) as builder, psycopg.connect(url, autocommit=True) as writer:
        builder.execute(build)  # its transaction stays open: the lock is held
        writer.execute("SET lock_timeout = '300ms'")
        try:
            writer.execute(insert)
            return "inserted"
        except psycopg.errors.LockNotAvailable:
            return "blocked"
        finally:
            builder.rollback()


def test_an_index_built_in_one_transaction_blocks_the_collectors_inserts(tsdb):
    assert compress_by_policy(tsdb) > 0
    insert = "INSERT INTO md VALUES (now(), 'C', '1m', 1, 1, 1, 'x')"
    assert _blocks_an_insert(tsdb, "CREATE INDEX md_open ON md (open)", insert) == "blocked"
    assert findings(tsdb, "CREATE INDEX md_open ON md (open)") == {"index-hypertable": "warning"}  # small here
    with psycopg.connect(tsdb, autocommit=True) as conn:  # the safe way, with compressed chunks, outside a transaction
        conn.execute("CREATE INDEX md_open ON md (open) WITH (timescaledb.transaction_per_chunk)")
    assert findings(tsdb, "CREATE INDEX md_o2 ON md (open) WITH (timescaledb.transaction_per_chunk)") == {}
    assert (
        _blocks_an_insert(tsdb, "CREATE INDEX plain_v ON plain (v)", "INSERT INTO plain VALUES (0, 'y')") == "blocked"
    )
    assert findings(tsdb, "CREATE INDEX plain_v ON plain (v)") == {"index-plain-table": "warning"}
    assert findings(tsdb, "CREATE INDEX CONCURRENTLY plain_v ON plain (v)") == {}


def test_db_lint_on_a_pending_file_with_the_live_catalog(tsdb, project):
    """The command: pending files only, the live catalog, exit 1 on an error, --strict for warnings, --json."""
    env = env_for(tsdb)
    assert migrate(tsdb, project).returncode == 0
    clean = qbctl("db", "lint", "--json", env=env, cwd=project)
    out = json.loads(clean.stdout)
    assert clean.returncode == 0 and out["files"] == [] and out["findings"] == []
    add(project, "0006_index.sql", "CREATE INDEX trades_symbol_idx ON trades (symbol);\n")
    warned = qbctl("db", "lint", env=env, cwd=project)
    assert warned.returncode == 0, warned.stderr
    assert warned.stdout.startswith("sql/schema/0006_index.sql:1: warning index-hypertable: CREATE INDEX on trades")
    assert "safe: CREATE INDEX ... ON trades (...) WITH (timescaledb.transaction_per_chunk)" in warned.stdout
    assert "tables from the live database" in warned.stdout
    strict = qbctl("db", "lint", "--strict", "--json", env=env, cwd=project)
    assert strict.returncode == 1 and json.loads(strict.stdout)["error"]["code"] == "LINT_FAILED"
    add(project, "0007_type.sql", "-- widen\nALTER TABLE market_data ALTER COLUMN volume TYPE numeric;\n")
    failed = qbctl("db", "lint", "--json", env=env, cwd=project)
    out = json.loads(failed.stdout)
    assert failed.returncode == 1 and out["error"]["code"] == "LINT_FAILED"
    assert out["files"] == ["sql/schema/0006_index.sql", "sql/schema/0007_type.sql"]
    errors = [(f["rule"], f["file"], f["line"]) for f in out["findings"] if f["severity"] == "error"]
    assert errors == [
        ("alter-type-compressed", "sql/schema/0007_type.sql", 2),
        ("cagg-column", "sql/schema/0007_type.sql", 2),
    ]
    assert all(f["safe"] for f in out["findings"])
    named = qbctl("db", "lint", "sql/schema/0006_index.sql", "--json", env=env, cwd=project)
    assert named.returncode == 0 and json.loads(named.stdout)["files"] == ["sql/schema/0006_index.sql"]
    # What lint called an error fails when migrated (the shipped policies' job has compressed nothing yet, but
    # the continuous aggregates read volume: the same error on any database).
    applied = migrate(tsdb, project)
    assert applied.returncode == 1 and json.loads(applied.stdout)["error"]["line"] == 2
