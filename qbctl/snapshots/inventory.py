"""What a database holds, in numbers that must come back identical after a restore.

Per table: the row count and a checksum of its rows: the sum of a 64-bit hash of each row, so
no sort is needed and the order of rows does not matter. The hash is hash_record_extended (the
column types' own hash functions, the ones hash partitioning relies on to stay stable across
versions) where every column's type has one, else the hash of the row's text (json, geometric
types, composites): twice as fast as text where it applies. TimescaleDB's hypertables
with their chunks and how many are compressed; its jobs; the applied migrations; versions and
size. Read over `Rows` (psycopg on the host, or psql in a container), compared by a pure
function. A row's text depends on a few settings (time zone, date style), so every reader sets
them to TEXT_SETTINGS first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from qbctl.db.connect import Rows

# A row's text must not depend on the session: fixed here for every reader.
TEXT_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "1",
                 "bytea_output": "hex"}
PGOPTIONS = " ".join(f"-c {k}={v}" for k, v in TEXT_SETTINGS.items())

SERVER_SQL = ("SELECT current_setting('server_version'), current_setting('server_version_num'),"
              " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
              " pg_database_size(current_database())::text, pg_encoding_to_char(d.encoding), d.datcollate,"
              " d.datctype, current_user::text, current_database()::text,"
              " (to_regclass('qbctl.migrations') IS NOT NULL)::text"
              " FROM pg_database d WHERE d.datname = current_database()")
# User tables: not the catalogs, not TimescaleDB's own schemas (its chunks are counted through
# their hypertable), not an extension's members, not partitions (counted through their parent).
# The third column: whether every column's type has a hash function hash_record_extended finds
# (a default hash operator class for it, its base type, its element type, or a binary-coercible
# type; enums and ranges always). Conservative: anything else is hashed as text.
TABLES_SQL = r"""
WITH hashable AS (
  SELECT oc.opcintype FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
  WHERE am.amname = 'hash' AND oc.opcdefault
), col AS (
  SELECT a.attrelid, (t.typtype IN ('e', 'r', 'm')
    OR (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END) IN (SELECT opcintype FROM hashable)
    OR (t.typcategory = 'A' AND t.typelem IN (SELECT opcintype FROM hashable))
    OR EXISTS (SELECT 1 FROM pg_cast k WHERE k.castsource = t.oid AND k.castmethod = 'b'
               AND k.casttarget IN (SELECT opcintype FROM hashable))) AS ok
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attnum > 0 AND NOT a.attisdropped
)
SELECT n.nspname::text, c.relname::text,
       (current_setting('server_version_num')::int >= 140000
        AND coalesce((SELECT bool_and(ok) FROM col WHERE col.attrelid = c.oid), true))::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspname NOT LIKE '\_timescaledb%' AND n.nspname NOT LIKE 'timescaledb\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""
HASH = {"record": "hash_record_extended(x, 0)", "text": "hashtextextended(x::text, 0)", "none": "NULL::numeric"}
HYPERTABLES_SQL = """
SELECT format('%I.%I', h.hypertable_schema, h.hypertable_name), h.num_chunks::text, h.compression_enabled::text,
       (SELECT count(*) FROM timescaledb_information.chunks c WHERE c.hypertable_schema = h.hypertable_schema
        AND c.hypertable_name = h.hypertable_name AND c.is_compressed)::text
FROM timescaledb_information.hypertables h ORDER BY 1
"""
# The policy jobs (ids from 1000): TimescaleDB's own jobs below 1000 come with the extension.
JOBS_SQL = """
SELECT job_id::text, format('%I.%I', proc_schema, proc_name),
       coalesce(format('%I.%I', hypertable_schema, hypertable_name), ''), schedule_interval::text,
       coalesce(config::text, ''), scheduled::text,
       CASE WHEN isfinite(next_start) THEN to_char(next_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00"')
            ELSE '' END
FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY 1
"""
MIGRATIONS_SQL = "SELECT kind, name, checksum FROM qbctl.migrations ORDER BY 1, 2"


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

    @property
    def rows(self) -> int:
        return sum(t["rows"] for t in self.tables.values())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Inventory:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read(rows: Rows, like: Inventory | None = None, checksums: bool = True) -> Inventory:
    """The inventory of the database `rows` is connected to (TEXT_SETTINGS already set).

    `like`: an inventory to compare with later; each table is then hashed the way it was there.
    checksums=False counts rows only (compare then skips the checksums): where the bytes are known
    to be the snapshot's already (a data directory whose file checksum matched)."""
    version, num, tsdb, size, enc, collate, ctype, user, db, tracked = rows(SERVER_SQL)[0]
    inv = Inventory(version, int(num) // 10000, tsdb, int(size), enc, collate, ctype, user, db)
    tables = []
    for schema, table, hashable in rows(TABLES_SQL):
        name = f"{schema}.{table}"
        how = "record" if hashable == "true" else "text"
        if like is not None and name in like.tables:
            how = like.tables[name].get("hash", "text")
        if not checksums:
            how = "none"
        tables.append((schema, table, how))
    if tables:
        parts = [f"SELECT {_literal(f'{s}.{t}')}, count(*)::text, coalesce(sum({HASH[how]}), 0)::text,"
                 f" {_literal(how)} FROM {quote(s)}.{quote(t)} x" for s, t, how in tables]
        for name, count, checksum, how in rows(" UNION ALL ".join(parts)):
            inv.tables[name] = {"rows": int(count), "checksum": checksum, "hash": how}
    if tsdb:
        for name, chunks, compression, compressed in rows(HYPERTABLES_SQL):
            inv.hypertables[name] = {"chunks": int(chunks), "compressed_chunks": int(compressed),
                                     "compression": compression == "true"}
        # next_start is when the job was due (not compared: it moves on; a restore from the dump sets it
        # back, since TimescaleDB's job statistics are not dumped and every job would run at once).
        inv.jobs = [{"id": int(j), "proc": p, "hypertable": h, "schedule_interval": i, "config": c,
                     "scheduled": s == "true", "next_start": n or None} for j, p, h, i, c, s, n in rows(JOBS_SQL)]
    if tracked == "true":
        inv.migrations = [{"kind": k, "name": n, "checksum": c} for k, n, c in rows(MIGRATIONS_SQL)]
    return inv


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
        elif got.get("hash") != "none" and \
                (got["checksum"], got.get("hash", "text")) != (want["checksum"], want.get("hash", "text")):
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
        out.append(f"TimescaleDB jobs differ: {len(actual.jobs)} jobs, expected {len(expected.jobs)}"
                   + _first_difference(_jobs(expected.jobs), _jobs(actual.jobs)))
    if expected.migrations != actual.migrations:
        out.append(f"applied migrations differ: {len(actual.migrations)}, expected {len(expected.migrations)}")
    return out


def _jobs(jobs: list[dict]) -> list[tuple]:
    return sorted((j["proc"], j["hypertable"], j["schedule_interval"], j["config"], j["scheduled"], j.get("id"))
                  for j in jobs)


def _first_difference(want: list[tuple], got: list[tuple]) -> str:
    missing = [w for w in want if w not in got]
    if missing:
        proc, table = missing[0][0], missing[0][1]
        return f" (first: {proc} on {table or 'no table'})"
    return ""
