"""What a statement did to the tables of a rehearsal's copy: locks, rows, rewrites, decompressions.

Read in the statement's own session, inside its transaction, right after it ran: a statement's locks
are held until its transaction ends, so the session's own rows in pg_locks give the strongest lock on
each relation, held from the statement's start until the commit; `pg_stat_xact_all_tables` counts the
rows the transaction inserted, updated and deleted so far; a relation whose `relfilenode` changed was
rewritten (ALTER COLUMN TYPE, VACUUM FULL, CLUSTER); a chunk whose compressed bit (status & 1) went
away was decompressed. Every relation is named by what a user knows: a chunk (and its compressed
chunk) by its hypertable, a materialization hypertable by its continuous aggregate, an index by its
table. `snapshot()` reads it (one query, over `Rows`); `diff()` and `lock_sentence()` are pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qbctl.db.connect import Rows

MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
RANK = {m: n for n, m in enumerate(MODES)}
# What each mode keeps waiting, in the words of a backend that inserts candles and reads them.
BLOCKS = {
    "AccessShareLock": "blocks nothing the backend does (only ALTER/DROP TABLE would wait)",
    "RowShareLock": "blocks nothing the backend does (only ALTER/DROP TABLE would wait)",
    "RowExclusiveLock": "blocks nothing the backend does (only CREATE INDEX and ALTER TABLE would wait)",
    "ShareUpdateExclusiveLock": "blocks no reads or writes (only VACUUM, CREATE INDEX and ALTER TABLE would wait)",
    "ShareLock": "blocks the collector's inserts, updates and deletes (reads go on)",
    "ShareRowExclusiveLock": "blocks the collector's inserts, updates and deletes (reads go on)",
    "ExclusiveLock": "blocks the collector's inserts, updates and deletes (plain reads go on)",
    "AccessExclusiveLock": "blocks the collector's inserts and every read of it",
}
BLOCKING = RANK["ShareLock"]  # from this mode on, writes wait

_SKIP = (
    "pg_catalog",
    "information_schema",
    "pg_toast",
    "_timescaledb_catalog",
    "_timescaledb_config",
    "_timescaledb_cache",
    "_timescaledb_functions",
    "timescaledb_information",
    "timescaledb_experimental",
    "qbctl",
)
_SKIP_SQL = "ARRAY[" + ",".join(f"'{s}'" for s in _SKIP) + "]::name[]"
# Per relation of the user's (tables, chunks, materialized views, indexes): its oid, the table it
# belongs to for a user, its relfilenode, the chunk's compressed bit (chunks only), the strongest mode
# this session holds on it, and the rows this transaction inserted, updated and deleted in it.
_COMMON = """
SELECT c.oid::text, {owner}, c.relfilenode::text, {status},
       (SELECT pg_catalog.string_agg(l.mode, ',') FROM pg_catalog.pg_locks l
        WHERE l.pid = __PID__ AND l.locktype = 'relation' AND l.relation = c.oid AND l.granted),
       (COALESCE(s.n_tup_ins, 0))::text, (COALESCE(s.n_tup_upd, 0))::text,
       (COALESCE(s.n_tup_del, 0))::text, c.relkind::text, {role}
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
JOIN pg_catalog.pg_class t ON t.oid = COALESCE(i.indrelid, c.oid)
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_catalog.pg_stat_xact_all_tables s ON s.relid = c.oid
{joins}
WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I') AND n.nspname <> ALL ({skip})
"""
PLAIN_SQL = _COMMON.format(
    owner="pg_catalog.format('%I.%I', tn.nspname, t.relname)", status="NULL::text", joins="", skip=_SKIP_SQL, role="''"
)
TIMESCALE_SQL = _COMMON.format(
    owner="COALESCE(o.owner, pg_catalog.format('%I.%I', tn.nspname, t.relname))",
    status="ch.status::text",
    # a chunk of a compressed hypertable holds compressed batches: its deleted rows are batches decompressed
    role="""CASE WHEN ch.id IS NULL THEN '' WHEN EXISTS (SELECT FROM _timescaledb_catalog.hypertable p
         WHERE p.compressed_hypertable_id = ch.hypertable_id) THEN 'batches' ELSE 'chunk' END""",
    joins="""LEFT JOIN _timescaledb_catalog.chunk ch ON (ch.schema_name, ch.table_name) = (tn.nspname, t.relname)
LEFT JOIN _timescaledb_catalog.hypertable ht ON (ht.schema_name, ht.table_name) = (tn.nspname, t.relname)
LEFT JOIN LATERAL (
  SELECT COALESCE(
    (SELECT pg_catalog.format('%I.%I', ca.user_view_schema, ca.user_view_name)
     FROM _timescaledb_catalog.continuous_agg ca WHERE ca.mat_hypertable_id = h.id),
    (SELECT pg_catalog.format('%I.%I', p.schema_name, p.table_name)
     FROM _timescaledb_catalog.hypertable p WHERE p.compressed_hypertable_id = h.id),
    pg_catalog.format('%I.%I', h.schema_name, h.table_name)) AS owner
  FROM _timescaledb_catalog.hypertable h WHERE h.id = COALESCE(ch.hypertable_id, ht.id)) o ON true""",
    skip=_SKIP_SQL,
)
COMPRESSED, PARTIAL = 1, 8  # _timescaledb_catalog.chunk.status: compressed; compressed with rows outside it


@dataclass(frozen=True)
class Rel:
    owner: str  # the table a user knows it by
    filenode: str
    status: int | None  # a chunk's status bits; None for anything else
    mode: str | None  # the strongest lock this session holds on it
    ins: int
    upd: int
    dele: int
    kind: str  # pg_class.relkind
    role: str = ""  # chunk: a hypertable's chunk; batches: a compressed chunk (its rows are compressed batches)


Snapshot = dict[str, Rel]  # oid -> Rel


def snapshot(rows: Rows, timescaledb: bool, pid: int | None = None) -> Snapshot:
    """The user's relations, with the locks this session holds (or session `pid`'s: a statement that runs
    outside a transaction is watched from a second session while it runs)."""
    out = {}
    sql = (TIMESCALE_SQL if timescaledb else PLAIN_SQL).replace(
        "__PID__", "pg_catalog.pg_backend_pid()" if pid is None else str(int(pid))
    )
    for oid, owner, node, status, modes, ins, upd, dele, kind, role in rows(sql):
        mode = max(modes.split(","), key=RANK.__getitem__) if modes else None
        out[oid] = Rel(
            owner, node, int(status) if status is not None else None, mode, int(ins), int(upd), int(dele), kind, role
        )
    return out


@dataclass
class Effect:
    """What one statement did, per table a user knows."""

    locks: dict[str, str] = field(default_factory=dict)  # table -> strongest mode now held (new or stronger)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> {"inserted", "updated", "deleted"}
    rewritten: dict[str, int] = field(default_factory=dict)  # table -> relations (tables, chunks) rewritten
    decompressed: dict[str, int] = field(default_factory=dict)  # table -> chunks decompressed
    partly_decompressed: dict[str, int] = field(default_factory=dict)  # table -> chunks left partly compressed
    batches_decompressed: dict[str, int] = field(default_factory=dict)  # table -> compressed batches decompressed
    compressed: dict[str, int] = field(default_factory=dict)  # table -> chunks compressed


def strongest(snap: Snapshot, existing: Snapshot | None = None) -> dict[str, str]:
    """Per table a user knows, the strongest mode the session holds on it or any of its relations that
    `existing` holds (a relation made in the same transaction, a new index or chunk, is no one else's yet)."""
    out: dict[str, str] = {}
    for oid, rel in snap.items():
        if existing is not None and oid not in existing:
            continue
        if rel.mode and (rel.owner not in out or RANK[rel.mode] > RANK[out[rel.owner]]):
            out[rel.owner] = rel.mode
    return out


def diff(before: Snapshot, after: Snapshot, existing: Snapshot | None = None) -> Effect:
    """What changed between two snapshots of the same transaction (pure); `existing`: the relations there
    were when the transaction began (the locks on the others are not reported)."""
    eff = Effect()
    was = strongest(before, existing)
    for owner, mode in strongest(after, existing).items():
        if owner not in was or RANK[mode] > RANK[was[owner]]:
            eff.locks[owner] = mode
    for oid, rel in after.items():
        old = before.get(oid)
        ins, upd, dele = (
            (rel.ins - old.ins, rel.upd - old.upd, rel.dele - old.dele) if old else (rel.ins, rel.upd, rel.dele)
        )
        if rel.kind not in ("r", "m"):
            pass  # an index: its table counts the rows
        elif rel.role == "batches":
            if dele > 0:
                eff.batches_decompressed[rel.owner] = eff.batches_decompressed.get(rel.owner, 0) + dele
        elif ins or upd or dele:
            t = eff.rows.setdefault(rel.owner, {"inserted": 0, "updated": 0, "deleted": 0})
            t["inserted"] += max(ins, 0)
            t["updated"] += max(upd, 0)
            t["deleted"] += max(dele, 0)
        if old is None:
            continue
        if old.filenode != rel.filenode and rel.kind in ("r", "m") and old.filenode != "0":
            eff.rewritten[rel.owner] = eff.rewritten.get(rel.owner, 0) + 1
        if old.status is not None and rel.status is not None and rel.kind == "r":  # the chunk, not its indexes
            if old.status & COMPRESSED and not rel.status & COMPRESSED:
                eff.decompressed[rel.owner] = eff.decompressed.get(rel.owner, 0) + 1
            elif rel.status & COMPRESSED and not old.status & COMPRESSED:
                eff.compressed[rel.owner] = eff.compressed.get(rel.owner, 0) + 1
            elif rel.status & PARTIAL and not old.status & PARTIAL:
                eff.partly_decompressed[rel.owner] = eff.partly_decompressed.get(rel.owner, 0) + 1
    return eff


def seconds_text(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def lock_sentence(mode: str, table: str, seconds: float) -> str:
    """'an AccessExclusiveLock on market_data for 40 s blocks the collector's inserts and every read of it
    for 40 s' (pure)."""
    held = seconds_text(seconds)
    article = "an" if mode[0] in "AEIOU" else "a"
    blocks = BLOCKS.get(mode, "")
    if RANK.get(mode, 0) >= BLOCKING:
        return f"{article} {mode} on {table} for {held} {blocks} for {held}"
    return f"{article} {mode} on {table} for {held} {blocks}"
