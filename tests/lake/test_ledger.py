"""The replay guard drops each replayed event once — once per committed batch; the
ledger and its saved guards survive a restart (a new Ledger over the same lake)."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from skybuffer.lake.ledger import Ledger, ReplayGuard, guard_identities


def rows(*rkeys: str) -> pa.Table:
    n = len(rkeys)
    return pa.table(
        {
            "did": ["did:plc:a"] * n,
            "kind": ["commit"] * n,
            "collection": ["app.bsky.feed.like"] * n,
            "rkey": list(rkeys),
            "rev": ["r1"] * n,
            "operation": ["create"] * n,
            "time_us": [1] * n,
        }
    )


def guard_of(*rkeys: str) -> ReplayGuard:
    return ReplayGuard("likes", "0-0", guard_identities("likes", rows(*rkeys)), time.time() + 60)


def test_a_batch_that_fails_after_dropping_replays_drops_them_again_on_its_retry() -> None:
    guard = guard_of("a", "b")
    every = pa.array([True] * 3)
    kept, dropped = guard.drop_replayed(rows("a", "b", "c"), every)
    assert (kept.num_rows, dropped) == (1, 2)
    guard.abandon()  # the commit failed: the batch is written again
    kept, dropped = guard.drop_replayed(rows("a", "b", "c"), every)
    assert (kept.num_rows, dropped) == (1, 2)
    guard.settle()  # this time it committed
    assert not guard.active and guard.changed
    kept, dropped = guard.drop_replayed(rows("a", "c"), pa.array([True] * 2))
    assert (kept.num_rows, dropped) == (2, 0)


def test_within_one_batch_each_guarded_event_is_dropped_once() -> None:
    guard = guard_of("a")
    _, first = guard.drop_replayed(rows("a"), pa.array([True]))
    kept, second = guard.drop_replayed(rows("a"), pa.array([True]))  # a later chunk
    assert (first, second, kept.num_rows) == (1, 0, 1)


def test_the_ledger_only_raises_its_ids_and_a_new_ledger_reads_them_back(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path))
    ledger.record("likes", "published", "5-0")
    ledger.record("likes", "published", "3-0")
    assert Ledger(str(tmp_path)).last("likes", "published") == "5-0"
    ledger.accept("likes", "2-0")
    assert Ledger(str(tmp_path)).last("likes", "committed") == "2-0"


def test_a_saved_guard_is_loaded_back_and_an_expired_one_is_deleted(tmp_path: Path) -> None:
    guards = Ledger(str(tmp_path)).guards
    guards.save(guard_of("a", "b"))
    loaded = Ledger(str(tmp_path)).guards.load("likes")
    assert loaded is not None and len(loaded.identities) == 2
    expired = guard_of("a")
    expired.expires = time.time() - 1
    guards.save(expired)
    assert guards.load("likes") is None
    assert not list((tmp_path / "_skybuffer").glob("guard-*"))
