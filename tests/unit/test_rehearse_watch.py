"""The rehearsal's reading of what a statement did (pure): locks per table a user knows, rows, rewrites,
decompressions, and the sentence a user reads."""

from __future__ import annotations

from qbctl.db.rehearse_watch import Rel, diff, lock_sentence, strongest


def rel(owner, node="1", status=None, mode=None, ins=0, upd=0, dele=0, kind="r", role=""):
    return Rel(owner, node, status, mode, ins, upd, dele, kind, role)


def test_the_strongest_lock_of_a_table_counts_its_chunks_and_indexes_but_not_what_the_transaction_made():
    before = {"1": rel("public.market_data"), "2": rel("public.market_data", kind="i"), "3": rel("public.orders")}
    after = {
        "1": rel("public.market_data", mode="RowExclusiveLock"),
        "2": rel("public.market_data", kind="i", mode="AccessExclusiveLock"),
        "3": rel("public.orders", mode="ShareLock"),
        "4": rel("public.orders", kind="i", mode="AccessExclusiveLock"),
    }  # the index CREATE INDEX made
    assert strongest(after, before) == {"public.market_data": "AccessExclusiveLock", "public.orders": "ShareLock"}
    assert diff(before, after, before).locks == {
        "public.market_data": "AccessExclusiveLock",
        "public.orders": "ShareLock",
    }
    # a lock the transaction already held is not the next statement's
    again = dict(after)
    assert diff(after, again, before).locks == {}


def test_rows_rewrites_and_decompression_per_table():
    before = {
        "1": rel("public.market_data", node="10", status=1),
        "2": rel("public.market_data", node="20", role="batches"),
        "3": rel("public.orders", node="30"),
        "4": rel("public.trades", node="40", status=1),
    }
    after = {
        "1": rel("public.market_data", node="10", status=9, ins=7800, upd=7800),
        "2": rel("public.market_data", node="20", role="batches", dele=20),
        "3": rel("public.orders", node="31", upd=5),
        "4": rel("public.trades", node="40", status=0),
    }
    eff = diff(before, after)
    assert eff.rows == {
        "public.market_data": {"inserted": 7800, "updated": 7800, "deleted": 0},
        "public.orders": {"inserted": 0, "updated": 5, "deleted": 0},
    }
    assert eff.batches_decompressed == {"public.market_data": 20}
    assert eff.partly_decompressed == {"public.market_data": 1}
    assert eff.decompressed == {"public.trades": 1}
    assert eff.rewritten == {"public.orders": 1}


def test_the_lock_in_words():
    assert lock_sentence("AccessExclusiveLock", "market_data", 40) == (
        "an AccessExclusiveLock on market_data for 40 s blocks the collector's inserts and every read of it for 40 s"
    )
    assert lock_sentence("ShareLock", "orders", 0.034) == (
        "a ShareLock on orders for 34 ms blocks the collector's inserts, updates and deletes (reads go on) for 34 ms"
    )
    assert lock_sentence("RowExclusiveLock", "orders", 1.5).startswith(
        "a RowExclusiveLock on orders for 1.5 s blocks nothing the backend does"
    )
