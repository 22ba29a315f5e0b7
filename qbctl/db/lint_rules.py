"""db lint's rules: each statement judged against the tables the VM has when it runs (see db/lint.py). Pure.

Every error here was measured on TimescaleDB 2.28.3 with its scheduler on, with and without compressed
chunks (tests/integration/test_lint.py): the server's own words are quoted in the message.
"""

from __future__ import annotations

import re

from qbctl.db import sqltree as tree
from qbctl.db.catalog import Catalog, Table

# A table this large blocks writes for seconds while an index is built on it: on an 88 MB table here (1.2 M
# rows, under load) one index took 1.8 s on a timestamp column, 4.8 s on a text one.
LARGE_BYTES = 100 * 1024 * 1024


def _compressed(t: Table, catalog: Catalog) -> tuple[str, str] | None:
    """(severity, why) when `t` has, or will have on the VM, compressed chunks; None when it cannot."""
    if t.new or t.decompressed or not t.hypertable:
        return None
    if t.compressed_chunks:
        return "error", f"{t.name} has {t.compressed_chunks} compressed chunks here"
    if t.columnstore and t.policy:
        return "error", (
            f"on the VM {t.name} has compressed chunks: its columnstore policy compresses chunks older than {t.policy}"
        )
    if t.columnstore:
        return "warning", f"{t.name} has the columnstore on: this fails once any of its chunks is compressed"
    return None


def _decompress(t: str) -> str:
    return f"SELECT decompress_chunk(c, true) FROM show_chunks('{t}') c;"


def judge(node, state: dict[str, Table], catalog: Catalog):
    from pglast import ast, enums

    if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        t = state.get(node.relation.relname or "")
        if t is not None:
            for cmd in node.cmds or ():
                yield from _alter(cmd, t, catalog, enums)
    elif isinstance(node, ast.IndexStmt):
        yield from _index(node, state)
    elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)) and node.relation is not None:
        t = state.get(node.relation.relname or "")
        if t is not None:
            yield from _dml(node, t, catalog, isinstance(node, ast.UpdateStmt))
    if isinstance(node, (ast.SelectStmt, ast.CallStmt)):
        yield from _calls_judged(node, state)


def _alter(cmd, t: Table, catalog: Catalog, enums):
    sub = cmd.subtype
    if sub == enums.AlterTableType.AT_AlterColumnType:
        state = _compressed(t, catalog)
        if state:
            yield (
                "alter-type-compressed",
                state[0],
                f'ALTER COLUMN {cmd.name} TYPE fails: "operation not supported on hypertables with compressed '
                f'chunks"; {state[1]}',
                f"decompress its chunks first, in the same file ({_decompress(t.name)}: on the VM that "
                "rewrites every compressed chunk, so rehearse it), then ALTER; or add a column of the new type "
                "and move the backend to it",
            )
        readers = sorted(v for v, cols in t.caggs.items() if cmd.name in cols)
        if readers:
            yield (
                "cagg-column",
                "error",
                f'ALTER COLUMN {cmd.name} TYPE fails: "cannot alter type of a column used by a view or rule" '
                f"(the continuous aggregate {', '.join(readers)} reads it)",
                f"drop {readers[0]}, alter the column, create {readers[0]} again WITH NO DATA, and refresh it in "
                "a file marked `-- qbctl: no-transaction` (CALL refresh_continuous_aggregate(...))",
            )
    elif sub == enums.AlterTableType.AT_DropColumn and cmd.name:
        if t.hypertable and t.columnstore and cmd.name in t.segmentby | t.orderby:
            yield (
                "drop-segmentby-column",
                "error",
                f'DROP COLUMN {cmd.name} fails: "cannot drop orderby or segmentby column from a hypertable with '
                f'columnstore enabled" ({cmd.name} is a {"segmentby" if cmd.name in t.segmentby else "orderby"} '
                f"column of {t.name})",
                f"take it out of timescaledb.compress_segmentby / compress_orderby first and decompress every "
                f"chunk ({_decompress(t.name)}; compressed chunks keep their settings), in the same file",
            )
        readers = sorted(v for v, cols in t.caggs.items() if cmd.name in cols)
        if readers:
            yield (
                "cagg-column",
                "error",
                f'DROP COLUMN {cmd.name} fails: "cannot drop desired object(s) because other objects depend on '
                f'them" (the continuous aggregate {", ".join(readers)} reads it)',
                f"drop or redefine {readers[0]} first (DROP MATERIALIZED VIEW, then create it without the column)",
            )
    elif sub == enums.AlterTableType.AT_AddColumn and cmd.def_ is not None and t.hypertable and t.columnstore:
        yield from _add_column(cmd.def_, t)
    elif sub == enums.AlterTableType.AT_AddConstraint and cmd.def_ is not None and t.hypertable:
        yield from _unique(cmd.def_.contype, cmd.def_.keys, t, "ADD CONSTRAINT")
    elif sub == enums.AlterTableType.AT_SetRelOptions:
        opts = tree.options(cmd.def_)
        off = next((k for k in ("compress", "enable_columnstore") if k in opts and tree.false(opts[k])), None)
        state = _compressed(t, catalog) if off else None
        if state:
            yield (
                "disable-columnstore-compressed",
                state[0],
                f'SET (timescaledb.{off} = false) fails: "cannot disable columnstore on hypertable with '
                f'columnstore chunks"; {state[1]}',
                f"remove the policy (SELECT remove_compression_policy('{t.name}', if_exists => true);), "
                f"decompress every chunk ({_decompress(t.name)}), then disable the columnstore, in one file",
            )


def _add_column(col, t: Table):
    from pglast import ast, enums

    for c in col.constraints or ():
        if c.contype == enums.ConstrType.CONSTR_DEFAULT and not _constant(c.raw_expr, ast):
            yield (
                "nonconstant-default-columnstore",
                "error",
                f'ADD COLUMN {col.colname} fails: "cannot add column with non-constant default expression to a '
                f'hypertable that has columnstore enabled" ({t.name})',
                f"add the column without the default, then set it for new rows: ALTER TABLE {t.name} ALTER "
                f"COLUMN {col.colname} SET DEFAULT ... (existing rows keep NULL)",
            )
        elif c.contype in (enums.ConstrType.CONSTR_FOREIGN, enums.ConstrType.CONSTR_GENERATED):
            what = "REFERENCES" if c.contype == enums.ConstrType.CONSTR_FOREIGN else "GENERATED"
            yield (
                "column-constraint-columnstore",
                "error",
                f'ADD COLUMN {col.colname} ... {what} fails: "cannot add column with constraints to a hypertable '
                f'that has columnstore enabled" ({t.name})',
                f"add the column alone, then the constraint on its own: ALTER TABLE {t.name} ADD CONSTRAINT ... "
                f"FOREIGN KEY ({col.colname}) REFERENCES ... NOT VALID"
                if what == "REFERENCES"
                else "add a plain column and fill it from the backend (a generated column cannot be added)",
            )


def _constant(expr, ast) -> bool:
    if isinstance(expr, ast.A_Const):
        return True
    if isinstance(expr, ast.TypeCast):
        return _constant(expr.arg, ast)
    if isinstance(expr, ast.A_Expr) and expr.lexpr is None:  # -1
        return _constant(expr.rexpr, ast)
    return False


def _unique(contype, keys, t: Table, what: str):
    from pglast import enums

    if contype not in (enums.ConstrType.CONSTR_UNIQUE, enums.ConstrType.CONSTR_PRIMARY) or keys is None:
        return
    cols = {k.sval for k in keys}
    missing = [c for c in t.partitioning if c != "?" and c not in cols]
    if missing:
        kind = "PRIMARY KEY" if contype == enums.ConstrType.CONSTR_PRIMARY else "UNIQUE"
        yield _unique_finding(t, missing, f"{what} {kind}")


def _unique_finding(t: Table, missing: list[str], what: str):
    return (
        "unique-without-partition-column",
        "error",
        f'{what} ({t.name}) fails: "cannot create a unique index without the column "{missing[0]}" (used in '
        'partitioning)"',
        f"include {', '.join(missing)} in the key: a hypertable enforces uniqueness chunk by chunk",
    )


def _index(node, state: dict[str, Table]):
    rel = node.relation.relname if node.relation is not None else None
    t = state.get(rel or "")
    if t is None or t.new:
        return
    opts = tree.options(node.options)
    if t.hypertable:
        if node.unique:
            cols = {e.name for e in node.indexParams or () if e.name}
            missing = [c for c in t.partitioning if c != "?" and c not in cols]
            if missing:
                yield _unique_finding(t, missing, "CREATE UNIQUE INDEX")
        if node.concurrent:
            yield (
                "concurrent-index-hypertable",
                "error",
                f'CREATE INDEX CONCURRENTLY fails: "hypertables do not support concurrent index creation" ({t.name})',
                "CREATE INDEX ... WITH (timescaledb.transaction_per_chunk): one chunk at a time, each locked only "
                "while its own index is built (qbctl runs that file statement by statement)",
            )
        elif "transaction_per_chunk" not in opts:
            large = t.bytes is not None and t.bytes >= LARGE_BYTES
            size = f"{t.bytes / 2**20:.0f} MB here" if t.bytes is not None else "how long depends on its size on the VM"
            yield (
                "index-hypertable",
                "error" if large else "warning",
                f"CREATE INDEX on {t.name} holds a SHARE lock on it and every chunk until the whole index is "
                f"built: inserts into {t.name} (the collector's) wait that long ({size})",
                f"CREATE INDEX ... ON {t.name} (...) WITH (timescaledb.transaction_per_chunk): each chunk is "
                "indexed in a transaction of its own (qbctl runs that file statement by statement)",
            )
    elif not node.concurrent:
        large = t.bytes is not None and t.bytes >= LARGE_BYTES
        size = f"{t.bytes / 2**20:.0f} MB here" if t.bytes is not None else "how long depends on its size on the VM"
        yield (
            "index-plain-table",
            "error" if large else "warning",
            f"CREATE INDEX on {t.name} blocks every write to it until the index is built ({size}"
            f"{'' if large or t.bytes is None else '; on the VM it may be far larger'})",
            "CREATE INDEX CONCURRENTLY (qbctl runs that file statement by statement; write it IF NOT EXISTS)",
        )


def _dml(node, t: Table, catalog: Catalog, update: bool):
    state = _compressed(t, catalog)
    if not state or _recent_only(node.whereClause, t):
        return
    verb = "UPDATE" if update else "DELETE"
    limit = catalog.dml_limit
    over = limit and t.compressed_rows is not None and t.compressed_rows > limit
    severity = "error" if update and over and node.whereClause is None else "warning"
    rows = f" ({t.compressed_rows:,} rows in compressed chunks here)" if t.compressed_rows is not None else ""
    yield (
        "dml-compressed",
        severity,
        f"{verb} on {t.name} decompresses the compressed batches it touches, slowly and in memory; past "
        f'{limit or 100_000:,} rows in one transaction it fails with "tuple decompression limit exceeded by '
        f'operation" (timescaledb.max_tuples_decompressed_per_dml_transaction){rows}',
        "limit it to recent, uncompressed rows (WHERE time > now() - INTERVAL ...), or to whole segments "
        "(a DELETE filtered on the segmentby columns only removes whole batches); for a backfill, decompress the "
        "chunks it needs in a file of its own first",
    )


def _recent_only(where, t: Table) -> bool:
    """WHERE <time column> >/>= now() - INTERVAL 'x' (with x shorter than the policy's): uncompressed rows only."""
    from pglast import ast

    if where is None or not t.partitioning:
        return False
    found = [where]
    if isinstance(where, ast.BoolExpr) and where.boolop == 0:  # AND
        found = list(where.args or ())
    for e in found:
        if (
            isinstance(e, ast.A_Expr)
            and e.name
            and e.name[0].sval in (">", ">=")
            and isinstance(e.lexpr, ast.ColumnRef)
            and e.lexpr.fields
            and e.lexpr.fields[-1].sval == t.partitioning[0]
        ):
            text = _deparse(e.rexpr)
            if re.search(r"\bnow\(\)|current_timestamp|CURRENT_TIMESTAMP", text):
                return True
    return False


def _deparse(node) -> str:
    from pglast.stream import RawStream

    try:
        return RawStream()(node)
    except Exception:  # noqa: BLE001 - a node the printer does not know: read as unknown
        return ""


def _calls_judged(node, state: dict[str, Table]):
    for call in tree.calls(node):
        if tree.func(call) != "create_hypertable":
            continue
        pos, named = tree.args(call)
        first = pos[0] if pos else named.get("relation")
        rel = tree.name(first) if first is not None else None
        t = state.get(rel) if rel else None
        if t is None or t.hypertable:
            continue
        migrate_data = "migrate_data" in named and not tree.false(tree.literal(named["migrate_data"]))
        if migrate_data:
            if t.has_rows:
                yield (
                    "create-hypertable-with-data",
                    "warning",
                    f"create_hypertable('{t.name}', ..., migrate_data => true) holds an ACCESS EXCLUSIVE lock on "
                    f"{t.name} while it copies every row into chunks: nothing reads or writes it meanwhile",
                    "run it when the backend can wait, or create a new hypertable and copy the rows over in batches",
                )
        elif t.has_rows:
            yield (
                "create-hypertable-with-data",
                "error",
                f'create_hypertable(\'{t.name}\') fails: "table "{t.name}" is not empty" (it holds rows here)',
                "add migrate_data => true (it locks the table while it copies the rows into chunks)",
            )
        elif not t.new:
            yield (
                "create-hypertable-with-data",
                "warning",
                f"create_hypertable('{t.name}') fails on the VM if {t.name} holds rows there: \"table is not empty\"",
                "add migrate_data => true if it may hold rows (it locks the table while it copies them)",
            )
