"""What a database holds, in numbers that must come back identical after a restore.

Per table: the row count and a checksum of its rows: the sum of a 64-bit hash of each row, so
no sort is needed and the order of rows does not matter. The hash is hash_record_extended (the
column types' own hash functions, the ones hash partitioning relies on to stay stable across
versions) where every column's type is a built-in one whose hash reads the value alone; else
the hash of the row's text: types without a hash function (json, xml, geometric types,
composites, types of extensions) and those whose hash reads OIDs that a dump does not keep
(enums, reg* types, aclitem). Twice as fast as text where it applies. TimescaleDB's hypertables
with their chunks and how many are compressed; its jobs; the applied migrations; versions and
size. Read over `Rows` (psycopg on the host, or psql in a container), compared by a pure
function.

No name of the user's can capture qbctl's SQL: a table is read under an alias whose whole row
is `alias.*` (a column named like the alias is another thing), every function and type is
pg_catalog's, named so, and a reading session's search_path is pg_catalog only (READ_SETTINGS),
so neither a user's function nor a search_path setting changes what is computed. Names come back
hex-encoded (psql's separators are valid in a name). A row's text depends on a few settings
(time zone, date style, search_path for reg* values), so every reader sets READ_SETTINGS first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import overload

from qbctl.db.connect import Rows

# A row's text must not depend on the session: fixed here for every session qbctl runs SQL in.
TEXT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "standard_conforming_strings": "on",
}
PGOPTIONS = " ".join(f"-c {k}={v}" for k, v in TEXT_SETTINGS.items())
# A session that reads the inventory also resolves every name in pg_catalog alone (reg* values print
# schema-qualified; no user object named like a catalog function or type is ever picked).
READ_SETTINGS = {**TEXT_SETTINGS, "search_path": "pg_catalog,pg_temp"}
READ_PGOPTIONS = " ".join(f"-c {k}={v}" for k, v in READ_SETTINGS.items())
# The same settings for a psycopg transaction: SELECT set_config(...) with these parameters.
READ_SETTINGS_SQL = "SELECT " + ", ".join(["pg_catalog.set_config(%s, %s, true)"] * len(READ_SETTINGS))


def hex_text(expr: str) -> str:
    """SQL: `expr` as the hex of its UTF-8 bytes (what `unhex` reads back)."""
    return f"pg_catalog.encode(pg_catalog.convert_to(({expr})::pg_catalog.text, 'UTF8'), 'hex')"


@overload
def unhex(value: str) -> str: ...
@overload
def unhex(value: None) -> None: ...
def unhex(value: str | None) -> str | None:
    return None if value is None else bytes.fromhex(value).decode("utf-8")


SERVER_SQL = (
    "SELECT pg_catalog.current_setting('server_version'), pg_catalog.current_setting('server_version_num'),"
    " (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'),"
    " pg_catalog.pg_database_size(pg_catalog.current_database())::pg_catalog.text,"
    " pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate::pg_catalog.text,"
    " d.datctype::pg_catalog.text, " + hex_text("CURRENT_USER") + ", " + hex_text("pg_catalog.current_database()") + ","
    " (pg_catalog.to_regclass('qbctl.migrations') IS NOT NULL)::pg_catalog.text"
    " FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"
)
# Built-in types whose hash reads the value alone (so it is the same in any database, after a dump
# and restore and across versions), their arrays, and domains over either. Everything else is
# hashed as text: no hash function (json, xml, point, box, money, tsvector, bit, composites), one
# that reads OIDs a dump does not keep (enums, reg*, aclitem), or one qbctl does not know (an
# extension's). Collatable columns need a deterministic collation (a byte-wise hash).
STABLE_TYPES = (
    "bool",
    "bytea",
    "char",
    "name",
    "int2",
    "int4",
    "int8",
    "text",
    "varchar",
    "bpchar",
    "oid",
    "tid",
    "xid",
    "xid8",
    "cid",
    "oidvector",
    "float4",
    "float8",
    "numeric",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "uuid",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "pg_lsn",
    "jsonb",
    "int4range",
    "int8range",
    "numrange",
    "daterange",
    "tsrange",
    "tstzrange",
    "int4multirange",
    "int8multirange",
    "nummultirange",
    "datemultirange",
    "tsmultirange",
    "tstzmultirange",
)
_STABLE = "'{" + ",".join(STABLE_TYPES) + "}'::pg_catalog.name[]"
# User tables: not the catalogs, not TimescaleDB's own schemas (its chunks are counted through
# their hypertable), not an extension's members, not partitions (counted through their parent).
# Per table: schema and name (hex), whether its rows hash as records, and whether an older qbctl
# hashed it as records although a column's hash reads OIDs (see `read`).
TABLES_SQL = rf"""
WITH stable AS (
  SELECT t.oid FROM pg_catalog.pg_type t
  WHERE t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace AND t.typname = ANY ({_STABLE})
  UNION ALL
  SELECT t.typarray FROM pg_catalog.pg_type t
  WHERE t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace AND t.typname = ANY ({_STABLE})
), col AS (
  SELECT a.attrelid,
         ((CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END) IN (SELECT oid FROM stable)
          AND (a.attcollation = 0 OR coalesce(co.collisdeterministic, false))) AS stable,
         (t.typtype IN ('e', 'r', 'm') OR (t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
                                           AND (t.typname LIKE 'reg%' OR t.typname = 'aclitem'))) AS oids
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
  WHERE a.attnum > 0 AND NOT a.attisdropped
), rel AS (
  SELECT attrelid, pg_catalog.bool_and(stable) AS stable, pg_catalog.bool_or(oids) AS oids FROM col GROUP BY attrelid
)
SELECT {hex_text("n.nspname")}, {hex_text("c.relname")},
       (pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 140000
        AND coalesce(rel.stable, true))::pg_catalog.text,
       coalesce(rel.oids, false)::pg_catalog.text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN rel ON rel.attrelid = c.oid
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspname NOT LIKE '\_timescaledb%' AND n.nspname NOT LIKE 'timescaledb\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""
# Unlogged tables (partitions too): a copy of the data directory never holds their rows.
UNLOGGED_SQL = rf"""
SELECT {hex_text("n.nspname")}, {hex_text("c.relname")}
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'u' AND n.nspname NOT LIKE 'pg\_%'
ORDER BY n.nspname, c.relname
"""
# A table's whole row is `r.*` (never a column, whatever the table's columns are called).
HASH = {
    "record": "pg_catalog.hash_record_extended(r.*, 0)",
    "text": "pg_catalog.hashtextextended(CAST(r.* AS pg_catalog.text), 0)",
    "none": "NULL::pg_catalog.int8",
}
HYPERTABLES_SQL = f"""
SELECT {hex_text("pg_catalog.format('%I.%I', h.hypertable_schema, h.hypertable_name)")},
       h.num_chunks::pg_catalog.text, h.compression_enabled::pg_catalog.text,
       (SELECT pg_catalog.count(*) FROM timescaledb_information.chunks c
        WHERE c.hypertable_schema = h.hypertable_schema
        AND c.hypertable_name = h.hypertable_name AND c.is_compressed)::pg_catalog.text
FROM timescaledb_information.hypertables h ORDER BY h.hypertable_schema, h.hypertable_name
"""
# The policy jobs (ids from 1000): TimescaleDB's own jobs below 1000 come with the extension. A user's own
# job (add_job) has no hypertable: format's %I refuses a NULL.
JOBS_SQL = f"""
SELECT job_id::pg_catalog.text, {hex_text("pg_catalog.format('%I.%I', proc_schema, proc_name)")},
       {
    hex_text(
        "CASE WHEN hypertable_name IS NULL THEN '' "
        "ELSE pg_catalog.format('%I.%I', hypertable_schema, hypertable_name) END"
    )
},
       schedule_interval::pg_catalog.text, {hex_text("coalesce(config::pg_catalog.text, '')")},
       scheduled::pg_catalog.text,
       CASE WHEN pg_catalog.isfinite(next_start)
            THEN pg_catalog.to_char(next_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00"')
            ELSE '' END
FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id
"""
MIGRATIONS_SQL = f"SELECT kind, {hex_text('name')}, checksum FROM qbctl.migrations ORDER BY kind, name"


@dataclass
class Inventory:
    server_version: str
    major: int
    timescaledb: str | None
    size_bytes: int
    encoding: str
    collate: str
    ctype: str
    user: str
    database: str
    tables: dict[str, dict] = field(default_factory=dict)  # "schema.table" -> {"rows", "checksum", "hash"}
    hypertables: dict[str, dict] = field(default_factory=dict)  # -> {"chunks", "compressed_chunks", "compression"}
    jobs: list[dict] = field(default_factory=list)
    migrations: list[dict] = field(default_factory=list)
    unlogged: list[str] = field(default_factory=list)  # unlogged tables holding rows (partitions too)

    @property
    def rows(self) -> int:
        return sum(t["rows"] for t in self.tables.values())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Inventory:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def quote(name: str) -> str:
    """An SQL identifier, always quoted: any name, reserved words and mixed case included."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """An SQL string literal (standard_conforming_strings is on in every session qbctl opens: TEXT_SETTINGS)."""
    return "'" + text.replace("'", "''") + "'"


def table_key(schema: str, table: str) -> str:
    """A table's key: "schema.table", with a part that holds a dot or a double quote quoted, so that
    no two tables share a key ("a.b".c and a."b.c"), and every other name reads as it always did."""
    return f"{_part(schema)}.{_part(table)}"


def _part(name: str) -> str:
    return quote(name) if "." in name or '"' in name else name


def read(rows: Rows, like: Inventory | None = None, checksums: bool = True) -> Inventory:
    """The inventory of the database `rows` is connected to (READ_SETTINGS already set).

    `like`: an inventory to compare with later; each table is then hashed the way it was there.
    checksums=False counts rows only (compare then skips the checksums): where the bytes are known
    to be the snapshot's already (a data directory whose file checksum matched)."""
    version, num, tsdb, size, enc, collate, ctype, user, db, tracked = rows(SERVER_SQL)[0]
    inv = Inventory(version, int(num) // 10000, tsdb, int(size), enc, collate, ctype, unhex(user), unhex(db))
    found = [(unhex(s), unhex(t), hashable, oids) for s, t, hashable, oids in rows(TABLES_SQL)]
    plain = Counter(f"{s}.{t}" for s, t, _, _ in found)
    tables: list[tuple[str, str, str, str]] = []
    for schema, table, hashable, oids in found:
        key = table_key(schema, table)
        if (
            like is not None
            and key not in like.tables
            and plain[f"{schema}.{table}"] == 1
            and f"{schema}.{table}" in like.tables
        ):
            key = f"{schema}.{table}"  # a dotted name as an older qbctl recorded it
        how = "record" if hashable == "true" else "text"
        if like is not None and key in like.tables:
            how = like.tables[key].get("hash", "text")
            if how == "record" and oids == "true" and hashable != "true":
                # An older qbctl hashed these rows with OIDs (of enum labels, reg* values), which a restore
                # from the dump gives new numbers: that checksum cannot be compared; the rows can.
                how = "none"
        if not checksums:
            how = "none"
        tables.append((key, schema, table, how))
    if tables:  # by position: a name never appears in this SQL's output
        parts = [
            f"SELECT {i}::pg_catalog.text, pg_catalog.count(*)::pg_catalog.text,"
            f" coalesce(pg_catalog.sum({HASH[how]}), 0)::pg_catalog.text FROM {quote(s)}.{quote(t)} AS r"
            for i, (_, s, t, how) in enumerate(tables)
        ]
        for i, count, checksum in rows(" UNION ALL ".join(parts)):
            key, _, _, how = tables[int(i)]
            inv.tables[key] = {"rows": int(count), "checksum": checksum, "hash": how}
    inv.unlogged = _unlogged_with_rows(rows)
    if tsdb:
        for name, chunks, compression, compressed in rows(HYPERTABLES_SQL):
            inv.hypertables[unhex(name)] = {
                "chunks": int(chunks),
                "compressed_chunks": int(compressed),
                "compression": compression == "true",
            }
        # next_start is when the job was due (not compared: it moves on; a restore from the dump sets it
        # back, since TimescaleDB's job statistics are not dumped and every job would run at once).
        inv.jobs = [
            {
                "id": int(j),
                "proc": unhex(p),
                "hypertable": unhex(h),
                "schedule_interval": i,
                "config": unhex(c),
                "scheduled": s == "true",
                "next_start": n or None,
            }
            for j, p, h, i, c, s, n in rows(JOBS_SQL)
        ]
    if tracked == "true":
        inv.migrations = [{"kind": k, "name": unhex(n), "checksum": c} for k, n, c in rows(MIGRATIONS_SQL)]
    return inv


def _unlogged_with_rows(rows: Rows) -> list[str]:
    """The unlogged tables (partitions included) that hold rows: a copy of the data directory lacks them."""
    found = [(unhex(s), unhex(t)) for s, t in rows(UNLOGGED_SQL)]
    if not found:
        return []
    held = rows(
        " UNION ALL ".join(
            f"SELECT {i}::pg_catalog.text WHERE EXISTS (SELECT FROM ONLY {quote(s)}.{quote(t)})"
            for i, (s, t) in enumerate(found)
        )
    )
    return [table_key(*found[int(i)]) for (i,) in held]


def compare(expected: Inventory, actual: Inventory, jobs_ran: bool = False) -> list[str]:
    """What differs, one phrase each; empty when the data came back identical. Pure.

    jobs_ran: TimescaleDB's jobs may have run on `actual` (a server started on a restored data
    directory): chunk counts and compression may have moved on, so only the rest is compared."""
    out = []
    for name, want in expected.tables.items():
        got = actual.tables.get(name)
        if got is None:
            out.append(f"table {name} is missing")
        elif got["rows"] != want["rows"]:
            out.append(f"{name}: {got['rows']} rows, expected {want['rows']}")
        elif got.get("hash") != "none" and (got["checksum"], got.get("hash", "text")) != (
            want["checksum"],
            want.get("hash", "text"),
        ):
            out.append(f"{name}: same {want['rows']} rows but different contents (checksum)")
    out += [f"table {name} was not in the snapshot" for name in actual.tables if name not in expected.tables]
    for name, want in expected.hypertables.items():
        got = actual.hypertables.get(name)
        if got is None:
            out.append(f"hypertable {name} is missing")
            continue
        for key in ("compression",) if jobs_ran else ("chunks", "compressed_chunks", "compression"):
            if got[key] != want[key]:
                out.append(f"hypertable {name}: {key.replace('_', ' ')} {got[key]}, expected {want[key]}")
    if _jobs(expected.jobs) != _jobs(actual.jobs):
        out.append(
            f"TimescaleDB jobs differ: {len(actual.jobs)} jobs, expected {len(expected.jobs)}"
            + _first_difference(_jobs(expected.jobs), _jobs(actual.jobs))
        )
    if _migrations(expected.migrations) != _migrations(actual.migrations):
        out.append(f"applied migrations differ: {len(actual.migrations)}, expected {len(expected.migrations)}")
    return out


def _migrations(migrations: list[dict]) -> list[tuple]:
    """In one order whatever the database's collation sorted them by."""
    return sorted((m["kind"], m["name"], m["checksum"]) for m in migrations)


def _jobs(jobs: list[dict]) -> list[tuple]:
    return sorted(
        (j["proc"], j["hypertable"], j["schedule_interval"], j["config"], j["scheduled"], j.get("id")) for j in jobs
    )


def _first_difference(want: list[tuple], got: list[tuple]) -> str:
    missing = [w for w in want if w not in got]
    if missing:
        proc, table = missing[0][0], missing[0][1]
        return f" (first: {proc} on {table or 'no table'})"
    return ""
