"""db lint's rules without a database: the state a file meets on the VM, and docs/migrations.md's table of rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qbctl.config import settings as S
from qbctl.db import files as sqlfiles
from qbctl.db import lint
from qbctl.db.catalog import Catalog, Table
from qbctl.db.statements import split

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sqlfiles.load(S.load(environ={}, cwd=ROOT))


def run(sql: str, catalog: Catalog | None = None, shipped: bool = True) -> list[tuple[str, str, int]]:
    """(rule, severity, line) of a new schema file after the shipped ones, judged as on the VM."""
    target = lint.LintFile("sql/schema/0099_new.sql", "schema", split(sql))
    schema = [lint.LintFile(f.label, f.kind, f.statements) for f in SHIPPED if f.kind == "schema"] if shipped else []
    policies = [lint.LintFile(f.label, f.kind, f.statements) for f in SHIPPED if f.kind == "policy"] if shipped else []
    found = lint.check(schema + [target] + policies, catalog or Catalog(), {target.label})
    return [(f.rule, f.severity, f.line) for f in found]


def test_the_docs_list_every_rule():
    text = (ROOT / "docs" / "migrations.md").read_text()
    table = text.split("<!-- lint-rules:start", 1)[1].split("<!-- lint-rules:end -->", 1)[0]
    assert re.findall(r"^\| `([a-z-]+)` \|", table, re.M) == list(lint.RULES)


def test_the_shipped_schema_lints_clean_from_scratch():
    labels = {f.label for f in SHIPPED}
    found = lint.check([lint.LintFile(f.label, f.kind, f.statements) for f in SHIPPED], Catalog(), labels)
    assert found == []


def test_on_the_vm_a_hypertable_with_a_columnstore_policy_has_compressed_chunks():
    """The shipped policies compress market_data after 7 days: CI's empty database passes, the VM fails."""
    assert run("ALTER TABLE market_data ALTER COLUMN open TYPE float8;") == [
        ("alter-type-compressed", "error", 1),
        ("cagg-column", "error", 1),
    ]
    assert run("ALTER TABLE technical_indicators SET (timescaledb.compress = false);") == [
        ("disable-columnstore-compressed", "error", 1)
    ]
    # Decompressed first in the same file: the safe way is not flagged.
    assert (
        run(
            "SELECT decompress_chunk(c, true) FROM show_chunks('technical_indicators') c;\n"
            "ALTER TABLE technical_indicators ALTER COLUMN value TYPE float8;"
        )
        == []
    )


def test_the_live_catalog_says_what_is_here():
    live = Catalog(
        tables={
            "t": Table(
                "t",
                {"time", "a", "b"},
                ("time",),
                columnstore=True,
                segmentby={"a"},
                compressed_chunks=13,
                compressed_rows=500_000,
                bytes=200 * 2**20,
                has_rows=True,
            )
        },
        live=True,
    )
    no_policy = Catalog(tables={"t": Table("t", {"time", "a", "b"}, ("time",), columnstore=True)}, live=True)
    assert run("ALTER TABLE t ALTER COLUMN b TYPE numeric;", live, shipped=False) == [
        ("alter-type-compressed", "error", 1)
    ]
    assert run("ALTER TABLE t ALTER COLUMN b TYPE numeric;", no_policy, shipped=False) == [
        ("alter-type-compressed", "warning", 1)
    ]
    assert run("CREATE INDEX i ON t (b);", live, shipped=False) == [("index-hypertable", "error", 1)]
    assert run("CREATE INDEX i ON t (b) WITH (timescaledb.transaction_per_chunk);", live, shipped=False) == []
    assert run("UPDATE t SET b = 1;", live, shipped=False) == [("dml-compressed", "error", 1)]
    assert run("UPDATE t SET b = 1 WHERE a = 'x';", live, shipped=False) == [("dml-compressed", "warning", 1)]
    assert run("DELETE FROM t WHERE time >= now() - INTERVAL '1 hour';", live, shipped=False) == []
    assert run("ALTER TABLE t DROP COLUMN a;\nALTER TABLE t DROP COLUMN b;", live, shipped=False) == [
        ("drop-segmentby-column", "error", 1)
    ]
    big = Catalog(tables={"p": Table("p", {"x"}, bytes=500 * 2**20, has_rows=True)}, live=True)
    assert run("CREATE INDEX i ON p (x);", big, shipped=False) == [("index-plain-table", "error", 1)]
    assert run("SELECT create_hypertable('p', by_range('x'));", big, shipped=False) == [
        ("create-hypertable-with-data", "error", 1)
    ]


@pytest.mark.parametrize(
    "sql,want",
    [
        (
            "ALTER TABLE trades ADD COLUMN note_id uuid DEFAULT gen_random_uuid();",
            [("nonconstant-default-columnstore", "error", 1)],
        ),
        ("ALTER TABLE trades ADD COLUMN note text DEFAULT 'none';", []),
        (
            "ALTER TABLE trades ADD COLUMN order_ref bigint REFERENCES orders (id);",
            [("column-constraint-columnstore", "error", 1)],
        ),
        (
            "ALTER TABLE market_data ADD CONSTRAINT md_u UNIQUE (symbol, timeframe);",
            [("unique-without-partition-column", "error", 1)],
        ),
        (
            "CREATE UNIQUE INDEX CONCURRENTLY ON market_data (symbol, timeframe, time);",
            [("concurrent-index-hypertable", "error", 1)],
        ),
        ("CREATE INDEX ON orders (symbol);", [("index-plain-table", "warning", 1)]),
        (
            "CREATE TABLE fresh (time timestamptz NOT NULL, v int);\nCREATE INDEX ON fresh (v);\n"
            "SELECT create_hypertable('fresh', by_range('time'));\nALTER TABLE fresh SET (timescaledb.compress);\n"
            "ALTER TABLE fresh ALTER COLUMN v TYPE bigint;",
            [],
        ),  # new in this file: empty, nothing compressed
        (
            "CREATE TABLE ev (time timestamptz NOT NULL, v int)"
            " WITH (tsdb.hypertable, tsdb.partition_column = 'time');\n"
            "ALTER TABLE ev ADD COLUMN w uuid DEFAULT gen_random_uuid();",  # 2.28 turns the columnstore on for these
            [("nonconstant-default-columnstore", "error", 2)],
        ),
        (
            "SELECT create_hypertable('positions', by_range('updated_at'));",
            [("create-hypertable-with-data", "warning", 1)],
        ),
        ("SELEC 1;", [("unparsed", "warning", 1)]),
    ],
)
def test_rules_on_the_shipped_schema(sql, want):
    assert run(sql) == want


def test_files_deployed_together_create_new_tables_and_a_fresh_database_is_not_the_vm():
    first = lint.LintFile(
        "sql/schema/0006_ev.sql",
        "schema",
        split(
            "CREATE TABLE ev (time timestamptz NOT NULL, v int) WITH (tsdb.hypertable, tsdb.partition_column = 'time');"
        ),
    )
    second = lint.LintFile("sql/schema/0007_ev.sql", "schema", split("ALTER TABLE ev ALTER COLUMN v TYPE bigint;"))
    both = [first, second]
    # 0006 applied long ago on the VM (its columnstore policy has compressed chunks since): an error.
    assert [f.rule for f in lint.check(both, Catalog(), {second.label})] == ["alter-type-compressed"]
    # Both pending on a database that applied earlier files: they go out together, ev is new then.
    assert lint.check(both, Catalog(live=True), {second.label}, {first.label, second.label}) == []
