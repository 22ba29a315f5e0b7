"""A schema of the awkward cases for snapshots, and a fingerprint of it read without qbctl.

Names that look like qbctl's own SQL (a column `x`, the alias qbctl once hashed rows under; a table `t`;
columns named like the aliases and functions it uses), reserved words, quoted names (mixed case, spaces,
a double quote, dots, Korean, psql's separators), a second schema, enums, domains, a composite type,
columns whose type has no hash function (xml, point, box, json, money, tsvector, bit) or one that reads
OIDs (enums, regclass), generated and dropped columns, a table with no columns, an unlogged table,
partitioned tables (one hashed on an enum), a sequence; and functions named like the catalog's and
TimescaleDB's that fail when called, for a search_path that puts them first (SHADOWING_PATH). Shared by
the integration test of the inventory and the e2e round trips.
"""

from __future__ import annotations

SCHEMA = r"""
CREATE SCHEMA "Other Schema";
CREATE SCHEMA "a.b";
CREATE SCHEMA a;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE "Other Schema"."Pair" AS (a int, "b c" text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN "Other Schema".mood_d AS mood;
CREATE SEQUENCE "Other Schema"."Seq" START 100;
SELECT nextval('"Other Schema"."Seq"') FROM generate_series(1, 7);

CREATE TABLE t (x int, t text, r int, i int, hash_record_extended int, hashtextextended text, count int, sum numeric,
                "coalesce" text, "text" text, "numeric" int);
INSERT INTO t SELECT g, 'row ' || g, -g, g * 2, g * 3, 'h' || g, g, g / 3.0, 'c' || g, 't' || g, g
FROM generate_series(1, 50) g;
CREATE TABLE x (x int PRIMARY KEY, r text, "x.*" text);
INSERT INTO x SELECT g, 'r' || g, 'star' || g FROM generate_series(1, 20) g;

CREATE TABLE "order" ("select" int, "from" text, "where" boolean, "user" text, "group" date);
INSERT INTO "order" SELECT g, 'f' || g, g % 2 = 0, 'u' || g, date '2024-01-01' + g FROM generate_series(1, 30) g;
CREATE TABLE "select" ("table" int, "limit" text);
INSERT INTO "select" VALUES (1, 'one'), (2, NULL);
CREATE TABLE "user" ("order" text);
INSERT INTO "user" VALUES ('first'), ('second');

CREATE TABLE "Other Schema"."MixedCase" ("CamelCol" int, "has space" text, "quote""inside" text);
INSERT INTO "Other Schema"."MixedCase" SELECT g, 'space ' || g, 'q"' || g FROM generate_series(1, 12) g;
CREATE TABLE "a.b".c (v int);
INSERT INTO "a.b".c VALUES (1), (2), (3);
CREATE TABLE a."b.c" (v int);
INSERT INTO a."b.c" VALUES (10);
CREATE TABLE "시세" ("종목" text, "가격" int);
INSERT INTO "시세" VALUES ('005930', 71000), ('000660', 178000);
CREATE TABLE U&"sep\001Erec\001Ffield\001Dnull" (v int);
INSERT INTO U&"sep\001Erec\001Ffield\001Dnull" VALUES (1), (2);

CREATE TABLE types (id int, doc xml, pt point, b box, j json, jb jsonb, m mood, ms mood[], md "Other Schema".mood_d,
                    p "Other Schema"."Pair", pos posint, rc regclass, cash money, tsv tsvector, bits bit(4), c circle);
INSERT INTO types SELECT g, ('<a n="' || g || '">x</a>')::xml, point(g, -g), box(point(0, 0), point(g, g)),
       ('{"k": ' || g || ', "z": [1, 2]}')::json, ('{"k": ' || g || '}')::jsonb,
       (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, ARRAY['ok', 'happy']::mood[], 'sad',
       ROW(g, 'b ' || g)::"Other Schema"."Pair",
       g, 'public.t'::regclass, g * 1.5, to_tsvector('simple', 'word ' || g), B'1010', circle(point(g, g), 2)
FROM generate_series(1, 25) g;

CREATE TABLE gen (a int, dropped text, g int GENERATED ALWAYS AS (a * 2) STORED, after_drop text);
ALTER TABLE gen DROP COLUMN dropped;
INSERT INTO gen (a, after_drop) SELECT g, 'kept ' || g FROM generate_series(1, 10) g;

CREATE TABLE nocols ();
INSERT INTO nocols DEFAULT VALUES;
INSERT INTO nocols DEFAULT VALUES;
INSERT INTO nocols DEFAULT VALUES;

CREATE UNLOGGED TABLE scratch (id int, note text);

CREATE TABLE part (region text, v int) PARTITION BY LIST (region);
CREATE TABLE "Other Schema".part_kr PARTITION OF part FOR VALUES IN ('kr');
CREATE TABLE part_rest PARTITION OF part DEFAULT;
INSERT INTO part SELECT CASE WHEN g % 3 = 0 THEN 'kr' ELSE 'us' END, g FROM generate_series(1, 40) g;
CREATE TABLE moods (m mood, v int) PARTITION BY HASH (m);
CREATE TABLE moods_0 PARTITION OF moods FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE moods_1 PARTITION OF moods FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO moods SELECT (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, g FROM generate_series(1, 30) g;

CREATE FUNCTION "Other Schema".hash_record_extended(record, bigint) RETURNS bigint LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'a user''s hash_record_extended was called instead of pg_catalog''s'; END$$;
CREATE FUNCTION "Other Schema".hashtextextended(text, bigint) RETURNS bigint LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'a user''s hashtextextended was called instead of pg_catalog''s'; END$$;
CREATE FUNCTION "Other Schema".timescaledb_pre_restore() RETURNS bool LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'a user''s timescaledb_pre_restore was called instead of TimescaleDB''s'; END$$;
CREATE FUNCTION "Other Schema".timescaledb_post_restore() RETURNS bool LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'a user''s timescaledb_post_restore was called instead of TimescaleDB''s'; END$$;
"""
# The search_path a user may set (ALTER ROLE ... SET search_path) under which the functions above come first
# and TimescaleDB's schema (public) is left out.
SHADOWING_PATH = '"Other Schema", pg_catalog'
# Aggregates named like the catalog's (the integration test; a stack's other commands use count and sum in
# queries of their own, which are not the snapshot's).
SHADOW_AGGREGATES = r"""
CREATE FUNCTION "Other Schema".boom(bigint, bigint) RETURNS bigint LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'a user''s sum was called instead of pg_catalog''s'; END$$;
CREATE AGGREGATE "Other Schema".sum(bigint) (sfunc = "Other Schema".boom, stype = bigint);
CREATE FUNCTION "Other Schema".boom_count(bigint) RETURNS bigint LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'a user''s count was called instead of pg_catalog''s'; END$$;
CREATE AGGREGATE "Other Schema".count(*) (sfunc = "Other Schema".boom_count, stype = bigint);
"""
# With TimescaleDB: a hypertable of awkward names, its chunks compressed (all of them: the policy, which a
# scheduler runs at any moment, finds nothing to do), a compression policy, and a job of the user's own
# (add_job: no hypertable).
TIMESCALE = r"""
CREATE TABLE "Other Schema"."Ticks v2.1" ("time" timestamptz NOT NULL, x int, "select" text, r mood);
SELECT create_hypertable('"Other Schema"."Ticks v2.1"', by_range('time', INTERVAL '1 day'));
INSERT INTO "Other Schema"."Ticks v2.1"
SELECT timestamptz '2024-03-01' + g * INTERVAL '1 hour', g, 's' || g, 'ok' FROM generate_series(1, 100) g;
ALTER TABLE "Other Schema"."Ticks v2.1" SET (timescaledb.compress, timescaledb.compress_segmentby = '"select"');
SELECT compress_chunk(c) FROM show_chunks('"Other Schema"."Ticks v2.1"') c;
SELECT add_compression_policy('"Other Schema"."Ticks v2.1"', INTERVAL '30 days');
CREATE PROCEDURE "Other Schema"."My Job"(job_id int, config jsonb) LANGUAGE plpgsql AS $$BEGIN NULL; END$$;
SELECT add_job('"Other Schema"."My Job"', INTERVAL '1 day', config => '{"x": "y"}');
"""
# The tables as qbctl's inventory names them ("schema.table"; a part holding a dot or a quote quoted).
KEYS = {
    "public.t",
    "public.x",
    "public.order",
    "public.select",
    "public.user",
    "Other Schema.MixedCase",
    '"a.b".c',
    'a."b.c"',
    "public.시세",
    "public.sep\x1erec\x1ffield\x1dnull",
    "public.types",
    "public.gen",
    "public.nocols",
    "public.scratch",
    "public.part",
    "public.moods",
}
TIMESCALE_TABLE = 'Other Schema."Ticks v2.1"'
TIMESCALE_HYPERTABLE = '"Other Schema"."Ticks v2.1"'  # a hypertable's key is format('%I.%I')
ROWS = {
    "public.t": 50,
    "public.x": 20,
    "public.order": 30,
    "public.select": 2,
    "public.user": 2,
    "Other Schema.MixedCase": 12,
    '"a.b".c': 3,
    'a."b.c"': 1,
    "public.시세": 2,
    "public.sep\x1erec\x1ffield\x1dnull": 2,
    "public.types": 25,
    "public.gen": 10,
    "public.nocols": 3,
    "public.scratch": 0,
    "public.part": 40,
    "public.moods": 30,
}

# Every user relation with rows (partitions each on their own, so that a row routed elsewhere shows; but
# a hash partition's rows only through its parent: hashed on an enum, they follow its OIDs, which a dump
# does not keep, and pg_dump reloads them through the parent), sequences, enum labels and columns: what a
# restore must bring back, read with SQL of the test's own.
FINGERPRINT_SQL = r"""
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::text, c.relpersistence::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'qbctl')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_partitioned_table pt
                  ON pt.partrelid = i.inhparent WHERE i.inhrelid = c.oid AND pt.partstrat = 'h')
  AND n.nspname NOT LIKE 'pg\_%' AND n.nspname NOT LIKE '\_timescaledb%' AND n.nspname NOT LIKE 'timescaledb\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""


def fingerprint(conn) -> dict:
    """The awkward schema's data and shape, independently of qbctl (a psycopg connection)."""
    conn.execute("SET search_path = pg_catalog")  # regclass values print schema-qualified; no shadow is called
    conn.execute("SET TimeZone = 'UTC'")
    out: dict = {}
    for name, kind, persistence in conn.execute(FINGERPRINT_SQL).fetchall():
        if kind == "S":
            out[name] = conn.execute(f"SELECT last_value, is_called FROM {name}").fetchone()
            continue
        only = "ONLY " if kind == "r" else ""  # a partition's rows on their own; a partitioned table's all
        out[name] = (persistence,) + tuple(
            conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(CAST(r.* AS text), '|' ORDER BY CAST(r.* AS text)), ''))"
                f" FROM {only}{name} AS r"
            ).fetchone()
        )
    out["columns"] = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname), a.attname::text, format_type(a.atttypid, a.atttypmod),"
        " a.attgenerated::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attnum > 0 AND NOT a.attisdropped"
        " AND c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'Other Schema', 'a', 'a.b') ORDER BY 1, 2"
    ).fetchall()
    out["enums"] = conn.execute(
        "SELECT enumtypid::regtype::text, enumlabel::text FROM pg_enum ORDER BY 1, enumsortorder"
    ).fetchall()
    if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]:
        out["chunks"] = conn.execute(
            "SELECT hypertable_schema::text, hypertable_name::text, count(*), count(*) FILTER (WHERE is_compressed)"
            " FROM timescaledb_information.chunks GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        out["jobs"] = conn.execute(
            "SELECT proc_name::text, hypertable_schema::text, hypertable_name::text, config::text, scheduled"
            " FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY 1, 2, 3"
        ).fetchall()
    conn.execute("RESET search_path")
    return out
