"""What db lint needs to know about a live database, read once: tables, hypertables, columnstore,
compressed chunks, policies, continuous aggregates and the columns they read, sizes.

`read(rows)` returns plain data (`Catalog`); the rules (db/lint.py) never touch a connection, so they
are tested without a database, and a rehearsal can hand them the catalog of its copy. TimescaleDB's
part is read only where the extension is installed; its internal catalog (compressed row counts, the
views behind a continuous aggregate) is read where it answers, and left out where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qbctl.db.connect import Rows

USER_TABLES = """
SELECT c.oid::text, n.nspname, c.relname, pg_total_relation_size(c.oid)::text,
       (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'qbctl') AND n.nspname NOT LIKE 'pg\\_%'
  AND n.nspname NOT LIKE '\\_timescaledb\\_%' AND n.nspname <> 'timescaledb_information'
  AND n.nspname <> 'timescaledb_experimental'
"""
HYPERTABLES = """
SELECT h.hypertable_schema, h.hypertable_name, h.compression_enabled::text,
       hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass)::text,
       (SELECT string_agg(d.column_name, ',' ORDER BY d.dimension_number) FROM timescaledb_information.dimensions d
         WHERE d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name),
       (SELECT count(*) FROM timescaledb_information.chunks k WHERE k.hypertable_schema = h.hypertable_schema
           AND k.hypertable_name = h.hypertable_name AND k.is_compressed)::text,
       (SELECT string_agg(s.attname, ',') FROM timescaledb_information.compression_settings s
         WHERE s.hypertable_schema = h.hypertable_schema AND s.hypertable_name = h.hypertable_name
           AND s.segmentby_column_index IS NOT NULL),
       (SELECT string_agg(s.attname, ',') FROM timescaledb_information.compression_settings s
         WHERE s.hypertable_schema = h.hypertable_schema AND s.hypertable_name = h.hypertable_name
           AND s.orderby_column_index IS NOT NULL),
       (SELECT j.config->>'compress_after' FROM timescaledb_information.jobs j
         WHERE j.hypertable_schema = h.hypertable_schema AND j.hypertable_name = h.hypertable_name
           AND j.proc_name = 'policy_compression' LIMIT 1)
FROM timescaledb_information.hypertables h
"""
COMPRESSED_ROWS = """
SELECT h.schema_name, h.table_name, sum(s.numrows_pre_compression)::text
FROM _timescaledb_catalog.compression_chunk_size s
JOIN _timescaledb_catalog.chunk c ON c.id = s.chunk_id
JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
GROUP BY 1, 2
"""
CAGG_COLUMNS = """
SELECT ca.user_view_name, h.schema_name, h.table_name, string_agg(DISTINCT a.attname, ',')
FROM _timescaledb_catalog.continuous_agg ca
JOIN _timescaledb_catalog.hypertable h ON h.id = ca.raw_hypertable_id
JOIN pg_rewrite r ON r.ev_class = format('%I.%I', ca.direct_view_schema, ca.direct_view_name)::regclass
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refobjsubid > 0
                AND d.refobjid = format('%I.%I', h.schema_name, h.table_name)::regclass
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
GROUP BY 1, 2, 3
"""


@dataclass
class Table:
    """One table as the rules see it; the replay of statements changes it."""

    name: str
    columns: set[str] = field(default_factory=set)
    partitioning: tuple[str, ...] = ()  # a hypertable's partitioning columns; () for a plain table
    columnstore: bool = False
    segmentby: set[str] = field(default_factory=set)
    orderby: set[str] = field(default_factory=set)
    policy: str | None = None  # the columnstore policy's compress_after ("7 days"), None without one
    compressed_chunks: int = 0  # here, in the live database
    compressed_rows: int | None = None  # here, rows in compressed chunks (None: unknown)
    bytes: int | None = None  # here (None: unknown: no live database, or made by the files)
    has_rows: bool | None = None  # here (None: unknown)
    caggs: dict[str, set[str]] = field(default_factory=dict)  # continuous aggregate -> the columns it reads
    new: bool = False  # created by the file being linted: empty, nothing compressed yet
    decompressed: bool = False  # the file being linted decompressed its chunks before this statement

    @property
    def hypertable(self) -> bool:
        return bool(self.partitioning)


@dataclass
class Catalog:
    tables: dict[str, Table] = field(default_factory=dict)  # by unqualified name
    live: bool = False  # read from a database (False: only what the files declare)
    where: str = ""  # the database, masked
    timescaledb: str | None = None
    dml_limit: int | None = 100_000  # timescaledb.max_tuples_decompressed_per_dml_transaction (0: none)


def _split(text: str | None) -> set[str]:
    return {x.strip() for x in (text or "").split(",") if x.strip()}


def read(rows: Rows, where: str = "") -> Catalog:
    """The live catalog over `rows` (text columns)."""
    cat = Catalog(live=True, where=where)
    tsdb = rows("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    cat.timescaledb = tsdb[0][0] if tsdb else None
    for _oid, schema, name, size, columns in rows(USER_TABLES):
        t = Table(name, _split(columns), bytes=int(size))
        t.has_rows = bool(rows(f"SELECT 1 FROM ONLY {_qualified(schema, name)} LIMIT 1")) if int(size) else False
        cat.tables[name] = t
    if cat.timescaledb is None:
        return cat
    limit = rows("SELECT current_setting('timescaledb.max_tuples_decompressed_per_dml_transaction', true)")
    cat.dml_limit = int(limit[0][0]) if limit and limit[0][0] not in (None, "") else None
    for schema, name, enabled, size, dims, compressed, seg, order, after in rows(HYPERTABLES):
        t = cat.tables.setdefault(name, Table(name))
        t.partitioning = tuple(d for d in (dims or "").split(",") if d)
        t.columnstore, t.bytes = enabled == "true", int(size or 0)
        t.compressed_chunks, t.segmentby, t.orderby, t.policy = int(compressed), _split(seg), _split(order), after
        t.has_rows = bool(rows(f"SELECT 1 FROM {_qualified(schema, name)} LIMIT 1"))
    for query, apply in ((COMPRESSED_ROWS, _compressed_rows), (CAGG_COLUMNS, _cagg_columns)):
        try:
            found = rows(query)
        except Exception:  # noqa: BLE001 - TimescaleDB's internal catalog changed: leave this part out
            continue
        for row in found:
            apply(cat, row)
    return cat


def _compressed_rows(cat: Catalog, row: tuple) -> None:
    _, name, n = row
    if name in cat.tables:
        cat.tables[name].compressed_rows = int(n or 0)


def _cagg_columns(cat: Catalog, row: tuple) -> None:
    view, _, name, columns = row
    if name in cat.tables:
        cat.tables[name].caggs[view] = _split(columns)


def _qualified(schema: str, name: str) -> str:
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'
