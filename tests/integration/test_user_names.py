"""No name of the user's captures qbctl's SQL, on a real PostgreSQL: the snapshot inventory of a schema of
every awkward case (tests/awkward.py), dumped and restored into another database; db verify of hypertables
with quoted names; db seed beside a namesake of market_data; the load's queries beside a column named day."""

from __future__ import annotations

import copy
import json
import subprocess

import psycopg
import pytest

from qbctl.checks import load
from qbctl.db import seed
from qbctl.db.connect import psycopg_rows
from qbctl.snapshots import inventory
from tests import awkward
from tests.helpers import qbctl
from tests.integration.conftest import PG_BIN, _database
from tests.integration.test_migrate import env_for, migrate


def read(url: str, settings: bool = True, **kwargs) -> inventory.Inventory:
    """The inventory in one transaction, in a reading session as qbctl opens one (or the user's own)."""
    with psycopg.connect(url) as conn:
        if settings:
            conn.execute(inventory.READ_SETTINGS_SQL, [x for kv in inventory.READ_SETTINGS.items() for x in kv])
        return inventory.read(psycopg_rows(conn), **kwargs)


def make(url: str, timescaledb: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if timescaledb:
            conn.execute("CREATE EXTENSION timescaledb")
        conn.execute(awkward.SCHEMA)
        if timescaledb:
            conn.execute(awkward.TIMESCALE)


@pytest.fixture
def awkward_db(database, pg_server):
    make(database, pg_server["timescaledb"])
    return database


def test_every_awkward_table_is_counted_and_hashed(awkward_db, pg_server):
    inv = read(awkward_db)
    want = dict(awkward.ROWS)
    if pg_server["timescaledb"]:
        want[awkward.TIMESCALE_TABLE] = 100
        assert inv.hypertables[awkward.TIMESCALE_HYPERTABLE] == {
            "chunks": 5,
            "compressed_chunks": 5,
            "compression": True,
        }
        assert [(j["proc"], j["hypertable"]) for j in inv.jobs] == [
            ("_timescaledb_functions.policy_compression", awkward.TIMESCALE_HYPERTABLE),
            ('"Other Schema"."My Job"', ""),
        ]  # a job of the user's own has no hypertable
    assert {k: v["rows"] for k, v in inv.tables.items()} == want
    how = {k: v["hash"] for k, v in inv.tables.items()}
    # The column x, the table t, the reserved words: their own types' hashes. No hash function, or one that
    # reads OIDs (enums, regclass), or a composite: the row's text.
    assert how["public.t"] == how["public.x"] == how["public.order"] == how["public.nocols"] == "record"
    assert how["public.types"] == how["public.moods"] == "text"
    assert inv.tables["public.t"]["checksum"] != "0" and inv.tables["public.types"]["checksum"] != "0"
    assert inv.unlogged == []


def test_neither_a_search_path_nor_functions_named_like_the_catalogs_change_it(awkward_db):
    """A session whose search_path puts first a schema holding hash_record_extended, hashtextextended,
    sum and count that fail when called: the inventory is read the same."""
    expected = read(awkward_db)
    name = awkward_db.rsplit("/", 1)[1]
    with psycopg.connect(awkward_db, autocommit=True) as conn:
        conn.execute(awkward.SHADOW_AGGREGATES)
        conn.execute(f'ALTER DATABASE "{name}" SET search_path = {awkward.SHADOWING_PATH}, public')
    with psycopg.connect(awkward_db) as conn:
        with pytest.raises(psycopg.errors.RaiseException):  # the shadows are there and would be called
            conn.execute("SELECT sum(x::bigint) FROM t").fetchone()
    shadowed = read(awkward_db, settings=False)  # qbctl's names alone, under the user's search_path
    regclass = "public.types"  # its regclass values print per the search_path ("t"): their text differs
    assert {k: v for k, v in shadowed.tables.items() if k != regclass} == {
        k: v for k, v in expected.tables.items() if k != regclass
    }
    assert shadowed.tables[regclass]["rows"] == expected.tables[regclass]["rows"]
    assert (shadowed.hypertables, shadowed.jobs) == (expected.hypertables, expected.jobs)
    assert read(awkward_db).tables == expected.tables  # the reading session's search_path wins over the user's


def _restore_copy(source: str, target: str, timescaledb: bool, tmp_path) -> None:
    """pg_dump of `source`, pg_restore into the empty `target`, TimescaleDB's way where it is used."""
    dump = tmp_path / "awkward.dump"
    subprocess.run([str(PG_BIN / "pg_dump"), "--format=custom", "-f", str(dump), "-d", source], check=True)
    with psycopg.connect(target, autocommit=True) as conn:
        if timescaledb:
            conn.execute("CREATE EXTENSION timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--exit-on-error", "-d", target, str(dump)], check=True, capture_output=True
    )
    if timescaledb:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("SELECT timescaledb_post_restore()")  # no scheduler runs on this server: jobs wait


def test_a_dump_restored_into_another_database_reads_the_same(awkward_db, pg_server, tmp_path):
    expected = read(awkward_db)
    other = _database(pg_server)
    target = next(other)
    try:
        _restore_copy(awkward_db, target, pg_server["timescaledb"], tmp_path)
        actual = read(target, like=expected)
        assert inventory.compare(expected, actual) == []
        with psycopg.connect(awkward_db) as a, psycopg.connect(target) as b:
            assert awkward.fingerprint(a) == awkward.fingerprint(b)
            # Why an enum is hashed as text: its labels' hashes are their OIDs, new in the restored copy.
            by_record = "SELECT pg_catalog.sum(pg_catalog.hash_record_extended(r.*, 0))::text FROM moods r"
            assert a.execute(by_record).fetchone() != b.execute(by_record).fetchone()

        # A snapshot of an older qbctl hashed the enum's table by record (its OIDs): the rows are compared,
        # not that checksum. And it named a."b.c" "a.b.c", a name it reads under still.
        old = copy.deepcopy(expected)
        old.tables["public.moods"].update(hash="record", checksum="12345")
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute('DROP TABLE "a.b".c')
        old.tables.pop('"a.b".c')
        old.tables["a.b.c"] = old.tables.pop('a."b.c"')
        again = read(target, like=old)
        assert again.tables["public.moods"]["hash"] == "none" and "a.b.c" in again.tables
        assert inventory.compare(old, again) == []
        old.tables["public.moods"]["rows"] += 1
        assert inventory.compare(old, again) == ["public.moods: 30 rows, expected 31"]
    finally:
        next(other, None)


def test_unlogged_tables_that_hold_rows_are_named(awkward_db):
    with psycopg.connect(awkward_db, autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE part_jp PARTITION OF part FOR VALUES IN ('jp')")
        assert read(awkward_db).unlogged == []
        conn.execute("INSERT INTO part VALUES ('jp', 1)")
        conn.execute("INSERT INTO scratch VALUES (1, 'lost in a copy of the data directory')")
    assert read(awkward_db).unlogged == ["public.part_jp", "public.scratch"]


VERIFY_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE SCHEMA "Other Schema";
CREATE TABLE "Other Schema"."Ticks v2.1" ("time" timestamptz NOT NULL, "Sym" text, x int);
SELECT create_hypertable('"Other Schema"."Ticks v2.1"', by_range('time'));
CREATE TABLE "order" (t timestamptz NOT NULL, v int);
SELECT create_hypertable('"order"', by_range('t'));
ALTER TABLE "Other Schema"."Ticks v2.1" SET (timescaledb.compress, timescaledb.compress_segmentby = '"Sym"');
SELECT add_compression_policy('"Other Schema"."Ticks v2.1"', INTERVAL '7 days');
CREATE MATERIALIZED VIEW "Other Schema"."Bars.5m" WITH (timescaledb.continuous) AS
  SELECT time_bucket('5 minutes', "time") AS bucket, "Sym", count(*) FROM "Other Schema"."Ticks v2.1" GROUP BY 1, 2
  WITH NO DATA;
SELECT add_continuous_aggregate_policy('"Other Schema"."Bars.5m"', start_offset => INTERVAL '1 day',
  end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '1 hour');
"""


@pytest.mark.timescaledb
def test_verify_reads_quoted_names_with_dots_and_spaces(database, needs_timescaledb, tmp_path):
    (tmp_path / "sql" / "schema").mkdir(parents=True)
    (tmp_path / "sql" / "policies").mkdir()
    (tmp_path / "sql" / "schema" / "001_awkward.sql").write_text(VERIFY_SCHEMA)
    assert migrate(database, tmp_path).returncode == 0
    proc = qbctl("db", "verify", "--json", env=env_for(database), cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["drift"] == [], proc.stdout
    assert result["checked"] == 6  # 2 hypertables, compression, its policy, the aggregate, its refresh policy


@pytest.mark.timescaledb
def test_seed_leaves_a_namesake_of_market_data_in_another_schema_alone(database, needs_timescaledb, project):
    assert migrate(database, project).returncode == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA archive")
        conn.execute("CREATE TABLE archive.market_data (time timestamptz NOT NULL, symbol text, close numeric)")
        conn.execute("SELECT create_hypertable('archive.market_data', by_range('time'))")
        conn.execute("INSERT INTO archive.market_data VALUES (now() - interval '2 days', '005930', 1)")
        conn.execute(
            "CREATE MATERIALIZED VIEW archive.bars WITH (timescaledb.continuous,"
            " timescaledb.materialized_only = true) AS SELECT time_bucket('1 day', time) AS day, symbol,"
            " max(close) FROM archive.market_data GROUP BY 1, 2 WITH NO DATA"
        )
        (job,) = conn.execute(
            "SELECT add_continuous_aggregate_policy('archive.bars', NULL, INTERVAL '1 hour', INTERVAL '12 hours')"
        ).fetchone()
    proc = qbctl(
        "db", "seed", "--no-redis", "--symbols", "1", "--days", "2", "--json", env=env_for(database), cwd=project
    )
    assert proc.returncode == 0, proc.stderr
    assert "bars" not in json.loads(proc.stdout)["rows"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM archive.bars").fetchone()[0] == 0  # not refreshed by seed
        assert (
            conn.execute("SELECT scheduled FROM timescaledb_information.jobs WHERE job_id = %s", (job,)).fetchone()[0]
            is True
        )


def test_the_loads_queries_hold_beside_columns_named_like_their_aliases(database, project, pg_server):
    """budget --load's queries over a market_data with columns named like their aliases (day, ret, vol)."""
    tsdb = pg_server["timescaledb"]
    assert migrate(database, project, *([] if tsdb else ["--without-timescaledb"])).returncode == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ALTER TABLE market_data ADD COLUMN day int, ADD COLUMN ret int, ADD COLUMN vol int")
        conn.execute(
            "INSERT INTO market_data (time, symbol, timeframe, open, high, low, close, volume, day)"
            " SELECT now() - g * interval '1 hour', '005930', '1m', 1, 2, 1, 2, 10, g"
            " FROM generate_series(1, 48) g"
        )
        funcs = load.TSDB_FUNCS if tsdb else load.PLAIN_FUNCS
        got = {
            name: conn.execute(sql.format(**funcs), ("005930",) if "%s" in sql else None).fetchall()
            for name, sql in load.QUERIES.items()
        }
    assert len(got["daily bars"]) in (2, 3) and got["ranking"][0][0] == "005930"  # 48 hours: two or three days


@pytest.mark.timescaledb
def test_status_and_seed_name_timescaledbs_schema_whatever_the_search_path(database, needs_timescaledb, project):
    """A search_path without TimescaleDB's schema (db status called hypertable_size by its plain name:
    exit 70), and one with a namesake of alter_job ahead of it (seed holds the refresh policies with it)."""
    from qbctl.db import jobs

    assert migrate(database, project).returncode == 0
    name = database.rsplit("/", 1)[1]
    with psycopg.connect(database, autocommit=True) as conn:
        # The refresh policies seed holds: one per aggregate of market_data (the jobs view names the aggregate).
        held = "SELECT j.job_id FROM timescaledb_information.jobs j WHERE " + jobs.REFRESH_OF.format(
            table=seed.MARKET_DATA
        )
        assert len(conn.execute(held).fetchall()) == 3
        conn.execute("CREATE SCHEMA app")
        conn.execute(
            "CREATE FUNCTION app.alter_job(job_id int, scheduled boolean) RETURNS void LANGUAGE plpgsql"
            " AS $$BEGIN RAISE EXCEPTION 'app.alter_job was called'; END$$"
        )
        conn.execute(f'ALTER DATABASE "{name}" SET search_path = app, pg_catalog')
    status = qbctl("db", "status", "--json", env=env_for(database), cwd=project)
    result = json.loads(status.stdout)
    assert (result.get("error") or {}).get("code") != "INTERNAL", status.stdout
    assert {h["name"] for h in result["hypertables"]} >= {"market_data", "trades"}
    with psycopg.connect(database, autocommit=True) as conn:  # the tables by their plain names, app first
        conn.execute(f'ALTER DATABASE "{name}" SET search_path = app, public, pg_catalog')
    seeded = qbctl(
        "db", "seed", "--no-redis", "--symbols", "1", "--days", "2", "--json", env=env_for(database), cwd=project
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert json.loads(seeded.stdout)["rows"]["market_data_5m"] > 0
    with psycopg.connect(database) as conn:  # the refresh policies scheduled, each with its next start back
        assert (
            conn.execute(
                "SELECT bool_and(j.scheduled AND s.next_start < 'infinity')"
                " FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s USING"
                " (job_id) WHERE j.proc_name = 'policy_refresh_continuous_aggregate'"
            ).fetchone()[0]
            is True
        )
