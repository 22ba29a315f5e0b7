"""db lint's rules: what a migration will do on the VM, found in PostgreSQL's own syntax trees. Pure.

`check(files, catalog, targets)` replays the statements in the order migrate runs them and judges
each statement of a target file against the state before it. The state a target file meets is the
one the VM has when that file runs there: every schema file before it and every policy file applied
long ago (so a hypertable with a columnstore policy holds compressed chunks there), overlaid with what
the live database says (compressed chunks, sizes, rows, what the continuous aggregates read). A table
the target file creates itself is new: empty, nothing compressed.

Each rule was measured on TimescaleDB 2.28.3 with its scheduler on, with and without compressed chunks
(tests/integration/test_lint.py proves each error fails there). An error is what fails, or what locks a
large table, on the VM; a warning is what may, depending on data lint cannot see.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from qbctl.db.catalog import Catalog, Table
from qbctl.db.statements import Statement

LARGE_BYTES = 100 * 1024 * 1024  # a table this large blocks writes for seconds while an index is built on it


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # error | warning
    file: str
    line: int
    message: str  # what will happen on the VM
    safe: str  # the safe way to write it
    source: str = "qbctl"  # qbctl | squawk

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class LintFile:
    label: str
    kind: str  # schema | policy
    statements: list[Statement]


RULES = {  # id -> what it finds: the README's table of rules is checked against this
    "alter-type-compressed": "ALTER COLUMN ... TYPE on a hypertable with compressed chunks",
    "disable-columnstore-compressed": "SET (timescaledb.compress = false) on a hypertable with compressed chunks",
    "unique-without-partition-column": "a unique index, UNIQUE or PRIMARY KEY without the partitioning column",
    "nonconstant-default-columnstore": "ADD COLUMN ... DEFAULT <expression> on a hypertable with the columnstore",
    "column-constraint-columnstore": "ADD COLUMN ... REFERENCES / GENERATED on a hypertable with the columnstore",
    "drop-segmentby-column": "DROP COLUMN of a segmentby or orderby column",
    "cagg-column": "ALTER COLUMN ... TYPE or DROP COLUMN of a column a continuous aggregate reads",
    "dml-compressed": "UPDATE or DELETE over compressed chunks",
    "index-hypertable": "CREATE INDEX on a hypertable without timescaledb.transaction_per_chunk",
    "concurrent-index-hypertable": "CREATE INDEX CONCURRENTLY on a hypertable",
    "index-plain-table": "CREATE INDEX on a large plain table without CONCURRENTLY",
    "create-hypertable-with-data": "create_hypertable on a table that holds rows",
    "unparsed": "a statement PostgreSQL's parser (18's grammar) cannot read",
}


def check(files: list[LintFile], catalog: Catalog, targets: set[str]) -> list[Finding]:
    """The findings of the target files (labels), each judged in the state the VM has when it runs."""
    parsed = {f.label: [(st, _parse(st)) for st in f.statements] for f in files}
    out: list[Finding] = []
    for f in files:
        if f.label not in targets:
            continue
        state = _base(files, parsed, f, catalog)
        for st, nodes in parsed[f.label]:
            if isinstance(nodes, str):
                out.append(Finding("unparsed", "warning", f.label, st.line, f"lint cannot parse it: {nodes}",
                                   "the server will say whether it can; lint's rules were not applied to it"))
                continue
            for node in nodes:
                for rule, severity, message, safe in _judge(node, state, catalog):
                    out.append(Finding(rule, severity, f.label, st.line, message, safe))
                _apply(node, state, new=True)
    return out


def _parse(st: Statement):
    """The statement's syntax trees, or the parser's error in words."""
    from pglast import parse_sql
    from pglast.parser import ParseError

    try:
        return [raw.stmt for raw in parse_sql(st.text)]
    except ParseError as exc:
        return str(exc.args[0])


def _base(files: list[LintFile], parsed: dict, target: LintFile, catalog: Catalog) -> dict[str, Table]:
    """The tables when `target` runs on the VM: the schema files before it, the other policy files, then
    what the live database knows on top (it may be the VM itself, or a developer's copy of its shape)."""
    state: dict[str, Table] = {}
    before = True
    order = [f for f in files if f.kind == "schema"] + [f for f in files if f.kind == "policy"]
    for f in order:
        if f.label == target.label:
            before = False
            continue
        if f.kind == "schema" and not before:
            continue
        for _, nodes in parsed[f.label]:
            if not isinstance(nodes, str):
                for node in nodes:
                    _apply(node, state, new=False)
    for name, live in catalog.tables.items():
        declared = state.get(name)
        merged = copy.deepcopy(live)
        if declared is not None:  # the files declare what the live database may not have yet (a policy)
            merged.partitioning = merged.partitioning or declared.partitioning
            merged.columnstore = merged.columnstore or declared.columnstore
            merged.segmentby = merged.segmentby or declared.segmentby
            merged.orderby = merged.orderby or declared.orderby
            merged.policy = merged.policy or declared.policy
            merged.columns |= declared.columns
            for view, cols in declared.caggs.items():
                merged.caggs.setdefault(view, cols)
        state[name] = merged
    return state


# --- reading the trees --------------------------------------------------------------------------------
def _name(node) -> str | None:
    """A relation named by a RangeVar, a string literal ('public.t') or a cast of one ('t'::regclass)."""
    from pglast import ast

    if isinstance(node, ast.RangeVar):
        return node.relname
    if isinstance(node, ast.TypeCast):
        return _name(node.arg)
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        text = node.val.sval.split(".")[-1].strip()
        return text[1:-1] if text.startswith('"') else text.lower()
    return None


def _literal(node) -> str | None:
    from pglast import ast

    if isinstance(node, ast.TypeCast):
        return _literal(node.arg)
    if isinstance(node, ast.A_Const):
        v = node.val
        for attr in ("sval", "ival", "fval", "boolval"):
            if v is not None and getattr(v, attr, None) is not None:
                return str(getattr(v, attr))
    return None


def _args(call) -> tuple[list, dict]:
    from pglast import ast

    pos, named = [], {}
    for a in call.args or ():
        if isinstance(a, ast.NamedArgExpr):
            named[a.name] = a.arg
        else:
            pos.append(a)
    return pos, named


def _calls(node) -> list:
    """Every function call in a statement, nested ones included."""
    from pglast import ast
    from pglast.visitors import Visitor

    found = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors, call):  # noqa: N802 - pglast's naming
            found.append(call)

    Calls()(node)
    return [c for c in found if isinstance(c, ast.FuncCall)]


def _func(call) -> str:
    return call.funcname[-1].sval.lower()


def _columns(node) -> set[str]:
    """The column names a query or expression refers to (the last part of each reference; * as '*')."""
    from pglast import ast
    from pglast.visitors import Visitor

    found: set[str] = set()

    class Refs(Visitor):
        def visit_ColumnRef(self, ancestors, ref):  # noqa: N802
            last = ref.fields[-1]
            found.add("*" if isinstance(last, ast.A_Star) else last.sval)

    Refs()(node)
    return found


def _options(defs) -> dict[str, str | None]:
    """WITH (...) / SET (...) options, their namespace dropped: {'compress': None, 'segmentby': 'a, b'}."""
    out = {}
    for d in defs or ():
        value = d.arg
        text = None
        if value is not None:
            text = getattr(value, "sval", None) or _literal(value)
            if text is None and hasattr(value, "val"):
                text = str(value.val)
            if text is None and hasattr(value, "boolval"):
                text = str(value.boolval)
        out[d.defname.lower()] = text
    return out


def _false(value: str | None) -> bool:
    return (value or "").strip().lower() in ("false", "off", "0", "no", "f")


def _column_list(text: str | None) -> set[str]:
    """'time DESC, symbol' -> {'time', 'symbol'}."""
    out = set()
    for part in (text or "").split(","):
        words = part.strip().split()
        if words:
            out.add(words[0].strip('"'))
    return out


# --- what a statement does to the tables ----------------------------------------------------------------
def _apply(node, state: dict[str, Table], new: bool) -> None:
    from pglast import ast, enums

    if isinstance(node, ast.CreateStmt):
        t = Table(node.relation.relname, {e.colname for e in node.tableElts or () if isinstance(e, ast.ColumnDef)},
                  new=new, has_rows=False if new else None, bytes=0 if new else None)
        opts = _options(node.options)
        if "hypertable" in opts and not _false(opts["hypertable"]):
            col = opts.get("partition_column") or opts.get("partitioning_column")
            t.partitioning = (col,) if col else ("?",)
            t.columnstore = not _false(opts.get("enable_columnstore", "true"))  # 2.28: on, with a policy
            t.policy = "its default (by chunk interval)" if t.columnstore else None
            t.segmentby = _column_list(opts.get("segmentby") or opts.get("compress_segmentby"))
            t.orderby = _column_list(opts.get("orderby") or opts.get("compress_orderby"))
        state[t.name] = t
    elif isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        t = state.get(node.relation.relname)
        if t is None:
            return
        for cmd in node.cmds or ():
            sub = cmd.subtype
            if sub == enums.AlterTableType.AT_AddColumn and cmd.def_ is not None:
                t.columns.add(cmd.def_.colname)
            elif sub == enums.AlterTableType.AT_DropColumn and cmd.name:
                t.columns.discard(cmd.name)
            elif sub == enums.AlterTableType.AT_SetRelOptions:
                opts = _options(cmd.def_)
                on = next((k for k in ("compress", "enable_columnstore") if k in opts), None)
                if on is not None:
                    t.columnstore = not _false(opts[on])
                    if not t.columnstore:
                        t.policy = None
                for key, attr in (("compress_segmentby", "segmentby"), ("segmentby", "segmentby"),
                                  ("compress_orderby", "orderby"), ("orderby", "orderby")):
                    if key in opts:
                        setattr(t, attr, _column_list(opts[key]))
    elif isinstance(node, ast.RenameStmt) and node.renameType == enums.ObjectType.OBJECT_COLUMN and node.relation:
        t = state.get(node.relation.relname)
        if t is not None and node.subname in t.columns:
            t.columns.discard(node.subname)
            t.columns.add(node.newname)
    elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        opts = _options(node.into.options)
        if "continuous" in opts and not _false(opts["continuous"]):
            view = node.into.rel.relname
            cols = _columns(node.query)
            for rel in _from_tables(node.query):
                if rel in state:
                    t = state[rel]
                    t.caggs[view] = set(t.columns) if "*" in cols else cols & t.columns if t.columns else cols
    elif isinstance(node, ast.DropStmt):
        _drop(node, state)
    elif isinstance(node, (ast.InsertStmt, ast.CopyStmt)):
        rel = node.relation.relname if node.relation is not None else None
        if rel in state and (not isinstance(node, ast.CopyStmt) or node.is_from):
            state[rel].has_rows = True
    elif isinstance(node, ast.TruncateStmt):
        for rv in node.relations or ():
            if rv.relname in state:
                state[rv.relname].has_rows, state[rv.relname].compressed_chunks = False, 0
    if isinstance(node, (ast.SelectStmt, ast.CallStmt)):
        _apply_calls(node, state)


def _from_tables(query) -> set[str]:
    from pglast import ast
    from pglast.visitors import Visitor

    found: set[str] = set()

    class Rels(Visitor):
        def visit_RangeVar(self, ancestors, rv):  # noqa: N802
            found.add(rv.relname)

    Rels()(query)
    return found if isinstance(query, ast.Node) else set()


def _drop(node, state: dict[str, Table]) -> None:
    from pglast import enums

    names = []
    for obj in node.objects or ():
        parts = obj if isinstance(obj, (list, tuple)) else [obj]
        last = parts[-1]
        names.append(getattr(last, "sval", None))
    if node.removeType == enums.ObjectType.OBJECT_TABLE:
        for n in names:
            state.pop(n, None)
    elif node.removeType in (enums.ObjectType.OBJECT_MATVIEW, enums.ObjectType.OBJECT_VIEW):
        for t in state.values():
            for n in names:
                t.caggs.pop(n, None)


def _apply_calls(node, state: dict[str, Table]) -> None:
    calls = _calls(node)
    names = {_func(c) for c in calls}
    for call in calls:
        fn = _func(call)
        pos, named = _args(call)
        first = pos[0] if pos else named.get("relation") or named.get("hypertable")
        rel = _name(first) if first is not None else None
        t = state.get(rel) if rel else None
        if fn == "create_hypertable" and rel:
            dim = pos[1] if len(pos) > 1 else named.get("dimension") or named.get("time_column_name")
            col = None
            if dim is not None:
                inner = _calls(dim)
                col = _literal(_args(inner[0])[0][0]) if inner and _args(inner[0])[0] else _literal(dim)
            t = state.setdefault(rel, Table(rel))
            t.partitioning = (col or "?",)
            if "migrate_data" in named and not _false(_literal(named["migrate_data"])):
                pass  # the rows stay, now in chunks
        elif fn == "add_dimension" and t is not None:
            extra = pos[1] if len(pos) > 1 else named.get("column_name") or named.get("dimension")
            inner = _calls(extra) if extra is not None else []
            col = _literal(_args(inner[0])[0][0]) if inner and _args(inner[0])[0] else _literal(extra)
            if col:
                t.partitioning = (*t.partitioning, col)
        elif fn in ("add_compression_policy", "add_columnstore_policy") and t is not None:
            after = pos[1] if len(pos) > 1 else named.get("compress_after") or named.get("after")
            t.policy = _literal(after) if after is not None else "?"
            t.columnstore = True
        elif fn in ("remove_compression_policy", "remove_columnstore_policy") and t is not None:
            t.policy = None
        elif fn in ("decompress_chunk", "convert_to_rowstore") and "show_chunks" in names:
            for shown in (c for c in calls if _func(c) == "show_chunks"):
                spos, snamed = _args(shown)
                target = _name(spos[0]) if spos else None
                if target in state:
                    state[target].compressed_chunks, state[target].decompressed = 0, True


# --- the rules -------------------------------------------------------------------------------------------
def _compressed(t: Table, catalog: Catalog) -> tuple[str, str] | None:
    """(severity, why) when `t` has, or will have on the VM, compressed chunks; None when it cannot."""
    if t.new or t.decompressed or not t.hypertable:
        return None
    if t.compressed_chunks:
        return "error", f"{t.name} has {t.compressed_chunks} compressed chunks here"
    if t.columnstore and t.policy:
        return "error", (f"on the VM {t.name} has compressed chunks: its columnstore policy compresses chunks "
                         f"older than {t.policy}")
    if t.columnstore:
        return "warning", f"{t.name} has the columnstore on: this fails once any of its chunks is compressed"
    return None


def _decompress(t: str) -> str:
    return f"SELECT decompress_chunk(c, true) FROM show_chunks('{t}') c;"


def _judge(node, state: dict[str, Table], catalog: Catalog):
    from pglast import ast, enums

    if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        t = state.get(node.relation.relname)
        if t is not None:
            for cmd in node.cmds or ():
                yield from _alter(cmd, t, catalog, enums)
    elif isinstance(node, ast.IndexStmt):
        yield from _index(node, state)
    elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)) and node.relation is not None:
        t = state.get(node.relation.relname)
        if t is not None:
            yield from _dml(node, t, catalog, isinstance(node, ast.UpdateStmt))
    if isinstance(node, (ast.SelectStmt, ast.CallStmt)):
        yield from _calls_judged(node, state)


def _alter(cmd, t: Table, catalog: Catalog, enums):
    sub = cmd.subtype
    if sub == enums.AlterTableType.AT_AlterColumnType:
        state = _compressed(t, catalog)
        if state:
            yield ("alter-type-compressed", state[0],
                   f"ALTER COLUMN {cmd.name} TYPE fails: \"operation not supported on hypertables with compressed "
                   f"chunks\"; {state[1]}",
                   f"decompress its chunks first, in the same file ({_decompress(t.name)}: on the VM that "
                   "rewrites every compressed chunk, so rehearse it), then ALTER; or add a column of the new type "
                   "and move the backend to it")
        readers = sorted(v for v, cols in t.caggs.items() if cmd.name in cols)
        if readers:
            yield ("cagg-column", "error",
                   f"ALTER COLUMN {cmd.name} TYPE fails: \"cannot alter type of a column used by a view or rule\" "
                   f"(the continuous aggregate {', '.join(readers)} reads it)",
                   f"drop {readers[0]}, alter the column, create {readers[0]} again WITH NO DATA, and refresh it in "
                   "a file marked `-- qbctl: no-transaction` (CALL refresh_continuous_aggregate(...))")
    elif sub == enums.AlterTableType.AT_DropColumn and cmd.name:
        if t.hypertable and t.columnstore and cmd.name in t.segmentby | t.orderby:
            yield ("drop-segmentby-column", "error",
                   f"DROP COLUMN {cmd.name} fails: \"cannot drop orderby or segmentby column from a hypertable with "
                   f"columnstore enabled\" ({cmd.name} is a {'segmentby' if cmd.name in t.segmentby else 'orderby'} "
                   f"column of {t.name})",
                   f"take it out of timescaledb.compress_segmentby / compress_orderby first and decompress every "
                   f"chunk ({_decompress(t.name)}; compressed chunks keep their settings), in the same file")
        readers = sorted(v for v, cols in t.caggs.items() if cmd.name in cols)
        if readers:
            yield ("cagg-column", "error",
                   f"DROP COLUMN {cmd.name} fails: \"cannot drop desired object(s) because other objects depend on "
                   f"them\" (the continuous aggregate {', '.join(readers)} reads it)",
                   f"drop or redefine {readers[0]} first (DROP MATERIALIZED VIEW, then create it without the column)")
    elif sub == enums.AlterTableType.AT_AddColumn and cmd.def_ is not None and t.hypertable and t.columnstore:
        yield from _add_column(cmd.def_, t)
    elif sub == enums.AlterTableType.AT_AddConstraint and cmd.def_ is not None and t.hypertable:
        yield from _unique(cmd.def_.contype, cmd.def_.keys, t, "ADD CONSTRAINT")
    elif sub == enums.AlterTableType.AT_SetRelOptions:
        opts = _options(cmd.def_)
        off = next((k for k in ("compress", "enable_columnstore") if k in opts and _false(opts[k])), None)
        state = _compressed(t, catalog) if off else None
        if state:
            yield ("disable-columnstore-compressed", state[0],
                   f"SET (timescaledb.{off} = false) fails: \"cannot disable columnstore on hypertable with "
                   f"columnstore chunks\"; {state[1]}",
                   f"remove the policy (SELECT remove_compression_policy('{t.name}', if_exists => true);), "
                   f"decompress every chunk ({_decompress(t.name)}), then disable the columnstore, in one file")


def _add_column(col, t: Table):
    from pglast import ast, enums

    for c in col.constraints or ():
        if c.contype == enums.ConstrType.CONSTR_DEFAULT and not _constant(c.raw_expr, ast):
            yield ("nonconstant-default-columnstore", "error",
                   f"ADD COLUMN {col.colname} fails: \"cannot add column with non-constant default expression to a "
                   f"hypertable that has columnstore enabled\" ({t.name})",
                   f"add the column without the default, then set it for new rows: ALTER TABLE {t.name} ALTER "
                   f"COLUMN {col.colname} SET DEFAULT ... (existing rows keep NULL)")
        elif c.contype in (enums.ConstrType.CONSTR_FOREIGN, enums.ConstrType.CONSTR_GENERATED):
            what = "REFERENCES" if c.contype == enums.ConstrType.CONSTR_FOREIGN else "GENERATED"
            yield ("column-constraint-columnstore", "error",
                   f"ADD COLUMN {col.colname} ... {what} fails: \"cannot add column with constraints to a hypertable "
                   f"that has columnstore enabled\" ({t.name})",
                   f"add the column alone, then the constraint on its own: ALTER TABLE {t.name} ADD CONSTRAINT ... "
                   f"FOREIGN KEY ({col.colname}) REFERENCES ... NOT VALID" if what == "REFERENCES" else
                   "add a plain column and fill it from the backend (a generated column cannot be added)")


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
    return ("unique-without-partition-column", "error",
            f"{what} ({t.name}) fails: \"cannot create a unique index without the column \"{missing[0]}\" (used in "
            "partitioning)\"",
            f"include {', '.join(missing)} in the key: a hypertable enforces uniqueness chunk by chunk")


def _index(node, state: dict[str, Table]):
    rel = node.relation.relname if node.relation is not None else None
    t = state.get(rel)
    if t is None or t.new:
        return
    opts = _options(node.options)
    if t.hypertable:
        if node.unique:
            cols = {e.name for e in node.indexParams or () if e.name}
            missing = [c for c in t.partitioning if c != "?" and c not in cols]
            if missing:
                yield _unique_finding(t, missing, "CREATE UNIQUE INDEX")
        if node.concurrent:
            yield ("concurrent-index-hypertable", "error",
                   "CREATE INDEX CONCURRENTLY fails: \"hypertables do not support concurrent index creation\" "
                   f"({t.name})",
                   "CREATE INDEX ... WITH (timescaledb.transaction_per_chunk): one chunk at a time, each locked only "
                   "while its own index is built (qbctl runs that file statement by statement)")
        elif "transaction_per_chunk" not in opts:
            large = t.bytes is not None and t.bytes >= LARGE_BYTES
            size = f"{t.bytes / 2**20:.0f} MB here" if t.bytes is not None else "how long depends on its size on the VM"
            yield ("index-hypertable", "error" if large else "warning",
                   f"CREATE INDEX on {t.name} holds a SHARE lock on it and every chunk until the whole index is "
                   f"built: inserts into {t.name} (the collector's) wait that long ({size})",
                   f"CREATE INDEX ... ON {t.name} (...) WITH (timescaledb.transaction_per_chunk): each chunk is "
                   "indexed in a transaction of its own (qbctl runs that file statement by statement)")
    elif not node.concurrent:
        large = t.bytes is not None and t.bytes >= LARGE_BYTES
        size = f"{t.bytes / 2**20:.0f} MB here" if t.bytes is not None else "how long depends on its size on the VM"
        yield ("index-plain-table", "error" if large else "warning",
               f"CREATE INDEX on {t.name} blocks every write to it until the index is built ({size}"
               f"{'' if large or t.bytes is None else '; on the VM it may be far larger'})",
               "CREATE INDEX CONCURRENTLY (qbctl runs that file statement by statement; write it IF NOT EXISTS)")


def _dml(node, t: Table, catalog: Catalog, update: bool):
    state = _compressed(t, catalog)
    if not state or _recent_only(node.whereClause, t):
        return
    verb = "UPDATE" if update else "DELETE"
    limit = catalog.dml_limit
    over = limit and t.compressed_rows is not None and t.compressed_rows > limit
    severity = "error" if update and over and node.whereClause is None else "warning"
    rows = f" ({t.compressed_rows:,} rows in compressed chunks here)" if t.compressed_rows is not None else ""
    yield ("dml-compressed", severity,
           f"{verb} on {t.name} decompresses the compressed batches it touches, slowly and in memory; past "
           f"{limit or 100_000:,} rows in one transaction it fails with \"tuple decompression limit exceeded by "
           f"operation\" (timescaledb.max_tuples_decompressed_per_dml_transaction){rows}",
           "limit it to recent, uncompressed rows (WHERE time > now() - INTERVAL ...), or to whole segments "
           "(a DELETE filtered on the segmentby columns only removes whole batches); for a backfill, decompress the "
           "chunks it needs in a file of its own first")


def _recent_only(where, t: Table) -> bool:
    """WHERE <time column> >/>= now() - INTERVAL 'x' (with x shorter than the policy's): uncompressed rows only."""
    from pglast import ast

    if where is None or not t.partitioning:
        return False
    found = [where]
    if isinstance(where, ast.BoolExpr) and where.boolop == 0:  # AND
        found = list(where.args)
    for e in found:
        if isinstance(e, ast.A_Expr) and e.name and e.name[0].sval in (">", ">=") and \
                isinstance(e.lexpr, ast.ColumnRef) and e.lexpr.fields[-1].sval == t.partitioning[0]:
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
    for call in _calls(node):
        if _func(call) != "create_hypertable":
            continue
        pos, named = _args(call)
        first = pos[0] if pos else named.get("relation")
        rel = _name(first) if first is not None else None
        t = state.get(rel) if rel else None
        if t is None or t.hypertable:
            continue
        migrate_data = "migrate_data" in named and not _false(_literal(named["migrate_data"]))
        if migrate_data:
            if t.has_rows:
                yield ("create-hypertable-with-data", "warning",
                       f"create_hypertable('{t.name}', ..., migrate_data => true) holds an ACCESS EXCLUSIVE lock on "
                       f"{t.name} while it copies every row into chunks: nothing reads or writes it meanwhile",
                       "run it when the backend can wait, or create a new hypertable and copy the rows over in "
                       "batches")
        elif t.has_rows:
            yield ("create-hypertable-with-data", "error",
                   f"create_hypertable('{t.name}') fails: \"table \"{t.name}\" is not empty\" (it holds rows here)",
                   "add migrate_data => true (it locks the table while it copies the rows into chunks)")
        elif not t.new:
            yield ("create-hypertable-with-data", "warning",
                   f"create_hypertable('{t.name}') fails on the VM if {t.name} holds rows there: \"table is not "
                   "empty\"",
                   "add migrate_data => true if it may hold rows (it locks the table while it copies them)")
