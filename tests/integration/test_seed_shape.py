"""db seed leaves production's shape (every chunk older than compress_after compressed by the policies' own
jobs, the bars refreshed, retention applied) whatever its size, with the scheduler on; the shipped schema's
0006 (text columns) on such data; a new database's first migrate prints no warning."""

from __future__ import annotations

import json
import shutil
import time

import psycopg
import pytest

from tests.helpers import ROOT, qbctl
from tests.integration.test_migrate import env_for, migrate

SEEDED = ("market_data", "technical_indicators", "trades", "system_logs")
CAGGS = ("market_data_1d", "market_data_1h", "market_data_5m")


def seed(url, cwd, *args):
    return qbctl("db", "seed", "--no-redis", "--json", *args, env=env_for(url), cwd=cwd, timeout=300)


def sql(url, text, *params):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text, params or None)
        return cur.fetchall() if cur.description else None


def chunk_state(url) -> dict[str, dict]:
    """Per hypertable seed writes: its chunks, compressed ones, those older than compress_after left
    uncompressed, and compressed chunks a write left partly uncompressed (catalog status bit 8)."""
    out = {}
    for table, chunks, compressed, left, partial in sql(
        url,
        """
        SELECT k.hypertable_name, count(*), count(*) FILTER (WHERE k.is_compressed),
               count(*) FILTER (WHERE NOT k.is_compressed
                                AND k.range_end <= now() - (p.config->>'compress_after')::interval),
               count(*) FILTER (WHERE c.status & 8 = 8)
        FROM timescaledb_information.chunks k
        JOIN _timescaledb_catalog.chunk c ON (c.schema_name, c.table_name) = (k.chunk_schema, k.chunk_name)
        JOIN timescaledb_information.jobs p ON p.proc_name = 'policy_compression'
             AND p.hypertable_name = k.hypertable_name
        WHERE k.hypertable_name = ANY(%s) GROUP BY 1""",
        list(SEEDED),
    ):
        out[table] = {"chunks": chunks, "compressed": compressed, "left": left, "partial": partial}
    return out


def status_figures(url, cwd) -> dict[str, dict]:
    proc = qbctl("db", "status", "--json", env=env_for(url), cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # no job failed, none paused or overdue
    return {
        h["name"]: {"chunks": h["chunks"], "compressed": h["compressed_chunks"]}
        for h in json.loads(proc.stdout)["hypertables"]
        if h["name"] in SEEDED
    }


def bars(url) -> dict[str, str]:
    """Each aggregate's whole content, as one hash (materialized and real-time rows alike)."""
    return {
        v: sql(url, f"SELECT md5(string_agg(b::text, ',' ORDER BY b.time, b.symbol)) FROM {v} b")[0][0] for v in CAGGS
    }


def bars_from_minutes(url) -> str:
    """The daily bars as computed from the 1-minute candles themselves."""
    return sql(
        url,
        "SELECT md5(string_agg(b::text, ',' ORDER BY b.time, b.symbol)) FROM ("
        " SELECT time_bucket(INTERVAL '1 day', time, 'Asia/Seoul') AS time, symbol::text,"
        " first(open, time) AS open, max(high) AS high, min(low) AS low, last(close, time) AS close,"
        " sum(volume) AS volume FROM market_data WHERE timeframe = '1m' GROUP BY 1, 2) b",
    )[0][0]


def no_job_failed_since(url, began) -> None:
    errors = sql(
        url, "SELECT job_id, err_message FROM timescaledb_information.job_errors WHERE start_time >= %s", began
    )
    assert errors == [], errors


def assert_production_shape(url, cwd, result) -> None:
    state = chunk_state(url)
    assert set(state) == set(SEEDED)
    for table, s in state.items():
        assert s["left"] == 0 and s["partial"] == 0, (table, s)  # every chunk past compress_after compressed
    assert state["market_data"]["compressed"] > 0 and state["technical_indicators"]["compressed"] > 0
    figures = {t: {"chunks": s["chunks"], "compressed": s["compressed"]} for t, s in state.items()}
    assert result["compression"] == figures  # --json says what the catalog holds ...
    assert status_figures(url, cwd) == figures  # ... and db status the same
    assert set(result["refreshed"]) == set(CAGGS)
    assert bars(url)["market_data_1d"] == bars_from_minutes(url)


@pytest.mark.timescaledb("the test needs TimescaleDB's scheduler, its policies and compressed chunks")
def test_seed_compresses_every_chunk_past_compress_after_whatever_its_size(scheduler_database, project):
    url = scheduler_database
    assert migrate(url, project).returncode == 0
    began = sql(url, "SELECT now()")[0][0]
    first = seed(url, project, "--symbols", "3", "--days", "20")
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(first.stdout)
    assert_production_shape(url, project, result)
    compression_jobs = {
        j
        for (j,) in sql(
            url,
            "SELECT job_id FROM timescaledb_information.jobs"
            " WHERE proc_name IN ('policy_compression', 'policy_retention')"
            " AND hypertable_name = ANY(%s)",
            list(SEEDED),
        )
    }
    assert compression_jobs <= set(result["jobs_run"])  # the policies' own jobs, not a path of seed's own
    why = result["refreshed"]["market_data_5m"]  # 20 days: the policy's last day does not reach them
    assert why.startswith("over all of history") and "the last 1 day" in why
    # A re-seed of another size writes into compressed chunks: they are compressed again, the figures follow.
    second = seed(url, project, "--symbols", "5", "--days", "12")
    assert second.returncode == 0, second.stdout + second.stderr
    assert_production_shape(url, project, json.loads(second.stdout))
    human = qbctl("db", "seed", "--no-redis", "--symbols", "2", "--days", "9", env=env_for(url), cwd=project)
    assert human.returncode == 0, human.stderr
    state = chunk_state(url)
    assert (
        f"market_data: {state['market_data']['compressed']} of {state['market_data']['chunks']} chunks "
        "compressed" in human.stdout
    )
    assert "market_data_5m: refreshed over all of history" in human.stdout
    # The jobs have their schedules back, and none failed, over rounds of the scheduler's own runs.
    assert (
        sql(
            url,
            "SELECT bool_and(s.next_start < 'infinity') FROM timescaledb_information.job_stats s"
            " WHERE s.job_id >= 1000",
        )[0][0]
        is True
    )
    for _ in range(5):
        assert qbctl("db", "status", env=env_for(url), cwd=project).returncode == 0
        time.sleep(1)
    no_job_failed_since(url, began)


@pytest.mark.timescaledb("the test needs TimescaleDB's refresh policies")
def test_a_seed_within_a_refresh_policy_s_window_runs_the_policy_s_job(scheduler_database, project):
    url = scheduler_database
    assert migrate(url, project).returncode == 0
    proc = seed(url, project, "--symbols", "1", "--days", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    refreshed = json.loads(proc.stdout)["refreshed"]
    assert refreshed["market_data_5m"].startswith("over all of history")  # its window: the last day
    (job,) = sql(
        url,
        "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name = 'market_data_5m'"
        " AND proc_name = 'policy_refresh_continuous_aggregate'",
    )[0]
    sql(
        url,
        "SELECT alter_job(job_id, config => jsonb_set(config, '{start_offset}', '\"30 days\"'))"
        " FROM timescaledb_information.jobs WHERE job_id = %s",
        job,
    )
    proc = seed(url, project, "--symbols", "1", "--days", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["refreshed"]["market_data_5m"].startswith(f"by its refresh policy's job {job}")
    assert job in result["jobs_run"]


def test_seed_on_the_plain_schema_says_nothing_about_chunks(plain_database, project):
    assert migrate(plain_database, project, "--without-timescaledb").returncode == 0
    proc = seed(plain_database, project, "--symbols", "1", "--days", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["compression"] == {} and result["refreshed"] == {} and result["jobs_run"] == []
    human = qbctl("db", "seed", "--no-redis", "--symbols", "1", "--days", "3", env=env_for(plain_database), cwd=project)
    assert human.returncode == 0 and "compressed" not in human.stdout and "refreshed" not in human.stdout


# --- deliverable 6: the shipped schema follows TimescaleDB's advice ---------------------------------------


def before_0006(project):
    """The project as it was before 0006: no 0006, the compression settings TimescaleDB advised against."""
    (project / "sql" / "schema" / "0006_text_columns.sql").unlink()
    policy = project / "sql" / "policies" / "020_compression.sql"
    text = policy.read_text()
    old = text.replace("compress_segmentby = 'symbol, timeframe, name'", "compress_segmentby = 'symbol'").replace(
        "compress_orderby = 'time DESC, id DESC'", "compress_orderby = 'time DESC'"
    )
    assert old != text
    policy.write_text(old)


def warnings_in(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "warning" in line.lower()]


def column_types(url, table) -> dict[str, str]:
    return dict(
        sql(
            url,
            "SELECT column_name::text, data_type::text FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = %s",
            table,
        )
    )


@pytest.mark.timescaledb("the test needs TimescaleDB's warnings, its scheduler and compressed chunks")
def test_a_new_database_s_first_migrate_prints_no_warning(scheduler_database, project):
    proc = qbctl("db", "migrate", "--verbose", env=env_for(scheduler_database), cwd=project)  # notices too
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert warnings_in(proc) == [] and "best practices" not in proc.stderr and "should be used" not in proc.stderr
    assert column_types(scheduler_database, "market_data")["symbol"] == "text"
    with pytest.raises(psycopg.errors.CheckViolation):  # the old length limits hold, as CHECKs
        sql(scheduler_database, "INSERT INTO market_data VALUES (now(), '0123456789ABC', '1m', 1, 1, 1, 1, 1)")


@pytest.mark.timescaledb("the test needs TimescaleDB's scheduler, compressed chunks and continuous aggregates")
def test_0006_on_seeded_compressed_data_keeps_every_row_and_bar(scheduler_database, project, tmp_path):
    url = scheduler_database
    before_0006(project)
    old = migrate(url, project)
    assert old.returncode == 0, old.stdout + old.stderr
    assert len([w for w in warnings_in(old) if "best practices" in w or "should be used" in w]) == 14
    seeded = seed(url, project, "--symbols", "4", "--days", "20")
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert all(s["compressed"] > 0 for s in chunk_state(url).values())
    rows = {
        t: sql(url, f"SELECT count(*), md5(string_agg(d::text, ',' ORDER BY d::text)) FROM {t} d")[0]
        for t in (*SEEDED, "orders")
    }
    before_bars = bars(url)
    began = sql(url, "SELECT now()")[0][0]
    shutil.copy(ROOT / "sql" / "schema" / "0006_text_columns.sql", project / "sql" / "schema")
    shutil.copy(ROOT / "sql" / "policies" / "020_compression.sql", project / "sql" / "policies")
    applied = qbctl("db", "migrate", "--json", env=env_for(url), cwd=project, timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert warnings_in(applied) == []
    assert [a["file"] for a in json.loads(applied.stdout)["applied"]] == [
        "sql/schema/0006_text_columns.sql",
        "sql/policies/020_compression.sql",
    ]
    # Every row and every bar as it was; the types TimescaleDB advises, but for the columns the bars read.
    assert {
        t: sql(url, f"SELECT count(*), md5(string_agg(d::text, ',' ORDER BY d::text)) FROM {t} d")[0] for t in rows
    } == rows
    assert bars(url) == before_bars
    assert column_types(url, "technical_indicators")["name"] == "text"
    assert column_types(url, "trades")["strategy"] == "text" and column_types(url, "orders")["status"] == "text"
    assert column_types(url, "market_data")["symbol"] == "character varying"  # read by the aggregates: kept
    # 0006 decompressed what it changed; the compression policies compress it again at their next run.
    for (job,) in sql(
        url,
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        " AND hypertable_name = ANY(%s)",
        list(SEEDED),
    ):
        sql(url, f"CALL run_job({job})")
    assert all(s["left"] == 0 and s["compressed"] > 0 for s in chunk_state(url).values())
    settings = dict(
        sql(url, "SELECT hypertable::text, segmentby FROM timescaledb_information.hypertable_compression_settings")
    )
    assert settings["technical_indicators"] == "symbol,timeframe,name"
    assert qbctl("db", "verify", env=env_for(url), cwd=project).returncode == 0
    for _ in range(5):
        assert qbctl("db", "status", env=env_for(url), cwd=project).returncode == 0
        time.sleep(1)
    no_job_failed_since(url, began)
    again = qbctl("db", "migrate", env=env_for(url), cwd=project)  # nothing left to apply, nothing to say
    assert again.returncode == 0 and warnings_in(again) == []
