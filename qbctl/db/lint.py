"""db lint: what a migration will do on the VM, from PostgreSQL's own syntax trees. Pure.

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
from collections.abc import Set
from dataclasses import dataclass

from qbctl.db import lint_rules
from qbctl.db import sqltree as tree
from qbctl.db.catalog import Catalog, Table
from qbctl.db.statements import Statement


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


RULES = {  # id -> what it finds: the table of rules in docs/migrations.md is checked against this
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


def check(
    files: list[LintFile], catalog: Catalog, targets: set[str], deployed_with: Set[str] = frozenset()
) -> list[Finding]:
    """The findings of the target files (labels), each judged in the state the VM has when it runs.

    `deployed_with`: files that run in the same deploy as the targets (the other pending files of a
    database that has applied some): what they create is new there too, not filled by months of data."""
    parsed = {f.label: [(st, _parse(st)) for st in f.statements] for f in files}
    out: list[Finding] = []
    for f in files:
        if f.label not in targets:
            continue
        state = _base(files, parsed, f, catalog, deployed_with)
        for st, nodes in parsed[f.label]:
            if isinstance(nodes, str):
                out.append(
                    Finding(
                        "unparsed",
                        "warning",
                        f.label,
                        st.line,
                        f"lint cannot parse it: {nodes}",
                        "the server will say whether it can; lint's rules were not applied to it",
                    )
                )
                continue
            for node in nodes:
                for rule, severity, message, safe in lint_rules.judge(node, state, catalog):
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


def _base(
    files: list[LintFile], parsed: dict, target: LintFile, catalog: Catalog, deployed_with: Set[str] = frozenset()
) -> dict[str, Table]:
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
                    _apply(node, state, new=f.label in deployed_with)
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


# --- what a statement does to the tables ----------------------------------------------------------------
def _apply(node, state: dict[str, Table], new: bool) -> None:
    from pglast import ast, enums

    t: Table | None
    if isinstance(node, ast.CreateStmt):
        assert node.relation is not None and node.relation.relname is not None  # CREATE TABLE names its table
        t = Table(
            node.relation.relname,
            {e.colname for e in node.tableElts or () if isinstance(e, ast.ColumnDef) and e.colname is not None},
            new=new,
            has_rows=False if new else None,
            bytes=0 if new else None,
        )
        opts = tree.options(node.options)
        if "hypertable" in opts and not tree.false(opts["hypertable"]):
            col = opts.get("partition_column") or opts.get("partitioning_column")
            t.partitioning = (col,) if col else ("?",)
            t.columnstore = not tree.false(opts.get("enable_columnstore", "true"))  # 2.28: on, with a policy
            t.policy = "its default (by chunk interval)" if t.columnstore else None
            t.segmentby = tree.column_list(opts.get("segmentby") or opts.get("compress_segmentby"))
            t.orderby = tree.column_list(opts.get("orderby") or opts.get("compress_orderby"))
        state[t.name] = t
    elif isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        t = state.get(node.relation.relname or "")
        if t is None:
            return
        for cmd in node.cmds or ():
            sub = cmd.subtype
            if sub == enums.AlterTableType.AT_AddColumn and cmd.def_ is not None and cmd.def_.colname is not None:
                t.columns.add(cmd.def_.colname)
            elif sub == enums.AlterTableType.AT_DropColumn and cmd.name:
                t.columns.discard(cmd.name)
            elif sub == enums.AlterTableType.AT_SetRelOptions:
                opts = tree.options(cmd.def_)
                on = next((k for k in ("compress", "enable_columnstore") if k in opts), None)
                if on is not None:
                    t.columnstore = not tree.false(opts[on])
                    if not t.columnstore:
                        t.policy = None
                for key, attr in (
                    ("compress_segmentby", "segmentby"),
                    ("segmentby", "segmentby"),
                    ("compress_orderby", "orderby"),
                    ("orderby", "orderby"),
                ):
                    if key in opts:
                        setattr(t, attr, tree.column_list(opts[key]))
    elif isinstance(node, ast.RenameStmt) and node.renameType == enums.ObjectType.OBJECT_COLUMN and node.relation:
        t = state.get(node.relation.relname or "")
        if t is not None and node.subname in t.columns and node.newname is not None:
            t.columns.discard(node.subname)
            t.columns.add(node.newname)
    elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        opts = tree.options(node.into.options)
        if "continuous" in opts and not tree.false(opts["continuous"]):
            assert node.into.rel is not None and node.into.rel.relname is not None  # CREATE MATERIALIZED VIEW names it
            view = node.into.rel.relname
            cols = tree.columns(node.query)
            for rel in _from_tables(node.query):
                if rel in state:
                    t = state[rel]
                    t.caggs[view] = set(t.columns) if "*" in cols else cols & t.columns if t.columns else cols
    elif isinstance(node, ast.DropStmt):
        _drop(node, state)
    elif isinstance(node, (ast.InsertStmt, ast.CopyStmt)):
        target = node.relation.relname if node.relation is not None else None
        if target is not None and target in state and (not isinstance(node, ast.CopyStmt) or node.is_from):
            state[target].has_rows = True
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

    names: list[str] = []
    for obj in node.objects or ():
        parts = obj if isinstance(obj, (list, tuple)) else [obj]
        name = getattr(parts[-1], "sval", None)
        if name is not None:  # None names nothing in state
            names.append(name)
    if node.removeType == enums.ObjectType.OBJECT_TABLE:
        for n in names:
            state.pop(n, None)
    elif node.removeType in (enums.ObjectType.OBJECT_MATVIEW, enums.ObjectType.OBJECT_VIEW):
        for t in state.values():
            for n in names:
                t.caggs.pop(n, None)


def _apply_calls(node, state: dict[str, Table]) -> None:
    calls = tree.calls(node)
    names = {tree.func(c) for c in calls}
    for call in calls:
        fn = tree.func(call)
        pos, named = tree.args(call)
        first = pos[0] if pos else named.get("relation") or named.get("hypertable")
        rel = tree.name(first) if first is not None else None
        t = state.get(rel) if rel else None
        if fn == "create_hypertable" and rel:
            dim = pos[1] if len(pos) > 1 else named.get("dimension") or named.get("time_column_name")
            col = None
            if dim is not None:
                inner = tree.calls(dim)
                col = tree.literal(tree.args(inner[0])[0][0]) if inner and tree.args(inner[0])[0] else tree.literal(dim)
            t = state.setdefault(rel, Table(rel))
            t.partitioning = (col or "?",)
            if "migrate_data" in named and not tree.false(tree.literal(named["migrate_data"])):
                pass  # the rows stay, now in chunks
        elif fn == "add_dimension" and t is not None:
            extra = pos[1] if len(pos) > 1 else named.get("column_name") or named.get("dimension")
            inner = tree.calls(extra) if extra is not None else []
            col = tree.literal(tree.args(inner[0])[0][0]) if inner and tree.args(inner[0])[0] else tree.literal(extra)
            if col:
                t.partitioning = (*t.partitioning, col)
        elif fn in ("add_compression_policy", "add_columnstore_policy") and t is not None:
            after = pos[1] if len(pos) > 1 else named.get("compress_after") or named.get("after")
            t.policy = tree.literal(after) if after is not None else "?"
            t.columnstore = True
        elif fn in ("remove_compression_policy", "remove_columnstore_policy") and t is not None:
            t.policy = None
        elif fn in ("decompress_chunk", "convert_to_rowstore") and "show_chunks" in names:
            for shown in (c for c in calls if tree.func(c) == "show_chunks"):
                spos, snamed = tree.args(shown)
                target = tree.name(spos[0]) if spos else None
                if target in state:
                    state[target].compressed_chunks, state[target].decompressed = 0, True
