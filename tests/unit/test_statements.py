"""The SQL splitter, what each statement needs, the file markers and the partial-file plan (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbctl.config import settings as S
from qbctl.db import files as sqlfiles
from qbctl.db import timescale
from qbctl.db.files import SqlFile, checksum
from qbctl.db.migrate import Applied, plan
from qbctl.db.statements import control, outside_transaction, split


def texts(sql: str) -> list[str]:
    return [s.text for s in split(sql)]


def test_split_respects_quotes_dollar_quotes_and_comments():
    sql = (
        "-- a; comment\nCREATE TABLE a (x text DEFAULT 'it''s; fine');  -- trailing; comment\n"
        "SELECT E'back\\'slash;', $$ dollar ; $$, $tag$ a $$ ; $tag$;\n"
        '/* block /* nested ; */ still ; */ SELECT "a;b" FROM x$y\n;\n;;\nSELECT 3'
    )
    assert texts(sql) == [
        "CREATE TABLE a (x text DEFAULT 'it''s; fine')",
        "SELECT E'back\\'slash;', $$ dollar ; $$, $tag$ a $$ ; $tag$",
        'SELECT "a;b" FROM x$y',
        "SELECT 3",
    ]
    assert [s.line for s in split(sql)] == [2, 3, 4, 7]


def test_split_keeps_a_sql_standard_function_body_whole():
    sql = (
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n"
        "  SELECT CASE WHEN true THEN 1 END;\nEND;\nSELECT f();\n"
        "CREATE FUNCTION g() RETURNS int AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql;\nBEGIN;\nCOMMIT;"
    )
    got = split(sql)
    assert [s.line for s in got] == [1, 6, 7, 8, 9]
    assert got[0].text.endswith("END") and [control(s) for s in got] == [None, None, None, "begin", "commit"]


def test_split_finds_no_statement_in_comments_and_an_unterminated_quote_runs_to_the_end():
    assert split("-- only\n/* comments */\n\n") == []
    assert texts("SELECT 'open;\nstill") == ["SELECT 'open;\nstill"]
    assert texts("SELECT $x$ open; ") == ["SELECT $x$ open;"]


def test_canonical_form_ignores_comments_and_blanks_but_not_strings():
    a, b, c = (split(x)[0] for x in ("SELECT  1,\n 'a  b' -- c\n", "SELECT 1, /* x */ 'a  b'", "SELECT 1, 'a b'"))
    assert a.checksum == b.checksum != c.checksum


@pytest.mark.parametrize(
    "sql,kind",
    [
        ("BEGIN", "begin"),
        ("begin isolation level serializable", "begin"),
        ("START TRANSACTION", "begin"),
        ("COMMIT", "commit"),
        ("end", "commit"),
        ("ROLLBACK", "rollback"),
        ("abort", "rollback"),
        ("PREPARE TRANSACTION 'x'", "prepare"),
        ("ROLLBACK TO SAVEPOINT s", None),
        ("rollback work to s", None),
        ("COMMIT PREPARED 'x'", None),
        ("SAVEPOINT s", None),
        ("SELECT 'BEGIN'", None),
        ("ENDX", None),
    ],
)
def test_transaction_control(sql, kind):
    assert control(split(sql)[0]) == kind


@pytest.mark.parametrize(
    "sql,needs",
    [
        ("CREATE INDEX CONCURRENTLY i ON t (x)", "CREATE INDEX CONCURRENTLY"),
        ("create unique index concurrently if not exists i on t (x)", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY i", "DROP INDEX CONCURRENTLY"),
        ("REINDEX (VERBOSE) INDEX CONCURRENTLY i", "REINDEX CONCURRENTLY"),
        (
            "CREATE INDEX i ON t (x) WITH (timescaledb.transaction_per_chunk)",
            "CREATE INDEX ... WITH (timescaledb.transaction_per_chunk)",
        ),
        (
            "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT time_bucket('1h', t) FROM x GROUP BY 1",
            "CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) WITH DATA",
        ),
        ("CALL refresh_continuous_aggregate('v', NULL, NULL)", "CALL refresh_continuous_aggregate"),
        ("VACUUM ANALYZE t", "VACUUM"),
        ("CREATE DATABASE x", "CREATE/DROP DATABASE"),
        ("ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM"),
        ("CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT 1 WITH NO DATA", None),
        ("CREATE INDEX i ON t (x)", None),
        ("SELECT 'CREATE INDEX CONCURRENTLY'", None),
        ("ANALYZE t", None),
        ("CREATE MATERIALIZED VIEW v AS SELECT 1", None),
    ],
)
def test_statements_refused_inside_a_transaction(sql, needs):
    assert outside_transaction(split(sql)[0]) == needs


def f(kind, name, text, tsdb=False):
    return SqlFile(kind, name, Path(name), text, checksum(text), tsdb or kind == "policy")


def test_markers_are_read_from_the_leading_comments_and_the_tools_own_places():
    assert f("schema", "a.sql", "-- title\n-- qbctl: no-transaction\nSELECT 1;").marked_no_transaction
    assert not f("schema", "a.sql", "SELECT 1;\n-- qbctl: no-transaction\n").marked_no_transaction
    goose = f(
        "schema",
        "g.sql",
        "-- +goose Up\n-- +goose NO TRANSACTION\nCREATE INDEX CONCURRENTLY i ON t (x);\n"
        "-- +goose Down\nDROP INDEX i;\n",
    )
    assert goose.marked_no_transaction == "-- +goose NO TRANSACTION"
    assert [(s.text, s.line) for s in goose.statements] == [("CREATE INDEX CONCURRENTLY i ON t (x)", 3)]
    dbmate = f("schema", "d.sql", "-- migrate:up transaction:false\nVACUUM t;\n\n-- migrate:down\nSELECT 2;\n")
    assert dbmate.marked_no_transaction and [s.text for s in dbmate.statements] == ["VACUUM t"]


def test_requires_timescaledb_only_in_the_leading_comments(tmp_path):
    (tmp_path / "sql" / "schema").mkdir(parents=True)
    (tmp_path / "sql" / "policies").mkdir()
    (tmp_path / "sql" / "schema" / "1.sql").write_text("\n-- about\n-- qbctl: requires timescaledb\nSELECT 1;\n")
    (tmp_path / "sql" / "schema" / "2.sql").write_text("SELECT 1;\n-- qbctl: requires timescaledb\n")
    got = {x.name: x.needs_timescaledb for x in sqlfiles.load(S.load(environ={}, cwd=tmp_path))}
    assert got == {"1.sql": True, "2.sql": False}


def test_a_latin1_file_is_one_line_naming_file_line_and_the_fix(tmp_path):
    from qbctl.errors import ConfigError

    (tmp_path / "sql" / "schema").mkdir(parents=True)
    (tmp_path / "sql" / "schema" / "1.sql").write_bytes("SELECT 1;\n-- café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        sqlfiles.load(S.load(environ={}, cwd=tmp_path))
    err = exc.value
    assert err.message == "sql/schema/1.sql:2: not UTF-8 (byte 0xe9 at column 7)" and err.code == "SQL_NOT_UTF8"
    assert "iconv -f latin1 -t utf8" in err.hint and err.exit_code == 2


def test_a_partial_file_continues_unless_a_committed_statement_was_edited():
    text = "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\nSELECT broken;\n"
    local = f("schema", "p.sql", text)
    sums = tuple(s.checksum for s in local.statements[:2])
    row = Applied("schema", "p.sql", checksum(text), "partial", 2, sums)
    (item,) = plan([local], {("schema", "p.sql"): row}, timescaledb=True)
    assert (item.state, item.reason) == (
        "partial",
        "2 of 3 statements committed; the next migrate continues at statement 3 (line 3)",
    )
    fixed = f("schema", "p.sql", "-- now fixed\nCREATE  TABLE a (x int);\nINSERT INTO a VALUES (1);\nSELECT 1;\n")
    assert plan([fixed], {("schema", "p.sql"): row}, True)[0].state == "partial"  # comments and blanks are no edit
    edited = f("schema", "p.sql", "CREATE TABLE a (x int);\nINSERT INTO a VALUES (2);\nSELECT 1;\n")
    (item,) = plan([edited], {("schema", "p.sql"): row}, True)
    assert (item.state, item.reason) == ("changed", "statement 2 (line 2) was committed and has been edited since")


def test_the_declaration_is_replayed_from_schema_and_policy_files():
    schema = f(
        "schema",
        "1.sql",
        """
        CREATE TABLE ticks (time timestamptz NOT NULL, sym text, px numeric);
        SELECT create_hypertable('ticks', 'time', chunk_time_interval => INTERVAL '6 hours');
        CREATE TABLE gone (time timestamptz NOT NULL);
        SELECT create_hypertable('public.gone', by_range('time'));
        SELECT add_retention_policy('gone', INTERVAL '3 days');
        DROP TABLE IF EXISTS gone CASCADE;
        CREATE TABLE ev (time timestamptz NOT NULL) WITH (tsdb.hypertable, tsdb.partition_column = 'time');
        CREATE MATERIALIZED VIEW ticks_1m WITH (timescaledb.continuous) AS
          SELECT time_bucket('1 minute', time) AS b, sym, extract(epoch FROM max(time)) FROM ticks GROUP BY 1, 2
          WITH NO DATA;
        SELECT add_continuous_aggregate_policy('ticks_1m', start_offset => NULL, end_offset => INTERVAL '1 minute',
                                               schedule_interval => '1 minute'::interval);
        ALTER MATERIALIZED VIEW ticks_1m SET (timescaledb.compress = true);
        SELECT add_compression_policy('ticks_1m', compress_after => INTERVAL '2 days');
        SELECT add_retention_policy('ticks', drop_after => INTERVAL '9 days');
        SELECT remove_retention_policy('ticks');
        -- SELECT add_retention_policy('ticks', drop_after => INTERVAL '1 day');
    """,
    )
    d = timescale.declared([schema])
    assert d.hypertables == {"ticks": ("time", "6 hours"), "ev": ("time", None)}
    assert d.caggs == {"ticks_1m": "ticks"}
    assert d.refresh == {"ticks_1m": (None, "1 minute", "1 minute")}
    assert d.compression == {"ticks_1m": (None, None)}
    assert d.policies == {("compression", "ticks_1m"): "2 days"}


def test_the_qb_policies_declare_the_bars():
    d = timescale.declared(
        sqlfiles.load(S.load(environ={"DATA_RETENTION_DAYS": "400"}, cwd=Path(__file__).resolve().parents[2]))
    )
    assert d.caggs == {f"market_data_{b}": "market_data" for b in ("5m", "1h", "1d")}
    assert d.refresh["market_data_1d"] == ("5 days", "1 day", "1 hour")
    assert d.policies[("retention", "market_data_5m")] == "400 days"
    assert d.compression["market_data_1h"] == ("symbol", "time DESC")


def job(**kw):
    base = {
        "job_id": 1000,
        "kind": "compression",
        "table": "t",
        "scheduled": True,
        "job_status": "Scheduled",
        "last_run_status": None,
        "total_failures": 0,
        "total_runs": 0,
        "last_run": None,
        "next_start": None,
        "overdue": False,
        "due": True,
    }
    return {**base, **kw}


def test_why_a_job_has_or_has_not_run():
    ok = timescale.Scheduler("8", running=True, busy=2, settled=True)
    none = timescale.Scheduler("0", running=False, busy=0, settled=True)
    young = timescale.Scheduler("8", running=True, busy=2, settled=False)
    state = timescale.job_state
    assert state(job(scheduled=False), ok)[0] == "paused"
    assert state(job(job_status="Running", next_start="-infinity", last_run="2026-01-01 10:00:00+00"), ok) == (
        None,
        "running since 2026-01-01 10:00:00",
    )
    assert state(job(last_run_status="Failed", total_failures=3, total_runs=3), ok)[0] == "failed"
    assert state(job(), young) == (None, "not run yet: due now")
    problem, why = state(job(), none)
    assert problem == "not running" and "no TimescaleDB scheduler" in why and "max_background_workers=0" in why
    problem, why = state(job(), ok)
    assert problem == "not running" and "out of background workers" in why
    late = job(total_runs=4, next_start="2026-01-01 10:00:00+00", overdue=True, due=True)
    assert state(late, ok)[0] == "not running" and state(late, young)[0] is None
    assert state(job(total_runs=4, next_start="2026-01-02 10:00:00+00", due=False), ok) == (
        None,
        "next run 2026-01-02 10:00:00",
    )


def test_a_job_postgresql_could_not_start_names_the_two_limits():
    sched = timescale.Scheduler("8", running=True, busy=3, settled=True, processes="8")
    failed = job(
        last_run_status="Failed",
        total_failures=1,
        total_runs=1,
        error='failed to start job Job 1005 ("Retention Policy [1005]") failed to start',
    )
    problem, why = timescale.job_state(failed, sched)
    assert problem == "failed" and "max_worker_processes=8" in why and "max_background_workers=8" in why
    other = job(last_run_status="Failed", total_failures=2, total_runs=2, error="division by zero")
    assert timescale.job_state(other, sched) == ("failed", "its last run failed (2 failures): division by zero")


def test_lines_and_checksums_are_those_of_the_hand_written_splitter():
    """Recorded with the splitter qbctl had before it read PostgreSQL's lexer: a partly applied file's
    committed statements are known by these checksums, so none may move."""
    import json

    from tests.splitter_corpus import CASES, generated

    root = Path(__file__).resolve().parents[2]
    want = json.loads((root / "tests" / "unit" / "statement_checksums.json").read_text())
    got = {name: [[s.line, s.checksum] for s in split(text)] for name, text in {**CASES, **generated()}.items()}
    for sql_file in sqlfiles.load(S.load(environ={}, cwd=root)):
        got[sql_file.label] = [[s.line, s.checksum] for s in sql_file.statements]
        got[sql_file.label + " (template)"] = [
            [s.line, s.checksum] for s in split(sqlfiles.normalise(sql_file.path.read_bytes()))
        ]
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if v != want[k]} == {}


@pytest.mark.parametrize(
    "sql,texts_",
    [
        ("SELECT 'a;'\n'b';\nSELECT 2", ["SELECT 'a;'\n'b'", "SELECT 2"]),  # a string continued on the next line
        ("SELECT U&'d;a', B'1', X'f;'[1];SELECT 2", ["SELECT U&'d;a', B'1', X'f;'[1]", "SELECT 2"]),
        ("SELECT 1x; SELECT 2", ["SELECT 1x; SELECT 2"]),  # what the lexer refuses runs to the end: the server says
        ("SELECT E'\\u00'; SELECT 2", ["SELECT E'\\u00'; SELECT 2"]),
        ("SELECT 1; /* open", ["SELECT 1"]),
    ],
)
def test_what_postgresqls_lexer_reads(sql, texts_):
    assert texts(sql) == texts_


def test_the_worker_arithmetic_of_a_running_server():
    from qbctl.db.timescale import Scheduler, slots_problem

    two = Scheduler("5", True, 3, True, "7", ("postgres", "qb_trading_dev"))
    assert two.job_slots == 2 and slots_problem(two) is None
    assert two.arithmetic() == (
        "timescaledb.max_background_workers 5 = the launcher + 2 schedulers (postgres, qb_trading_dev) + 2 job slots"
    )
    full = Scheduler("3", True, 3, True, "5", ("postgres", "qb_trading_dev"))
    assert full.job_slots == 0
    assert slots_problem(full) == (
        "no background worker is left for jobs: timescaledb.max_background_workers 3 = "
        "the launcher + 2 schedulers (postgres, qb_trading_dev) + 0 job slots; raise "
        "TIMESCALEDB_MAX_BACKGROUND_WORKERS to 4 or more and `qbctl up`"
    )
    none = Scheduler("0", False, 0, True, "8")  # no scheduler at all: job_state says so once it is late
    assert slots_problem(none) is None and "no launcher, no scheduler, no job" in none.arithmetic()
    assert Scheduler("4", True, 2, True, "8", ("qb",)).arithmetic().endswith("1 scheduler (qb) + 2 job slots")
