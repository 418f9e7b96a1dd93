"""The replay guard drops each replayed event once — once per committed batch."""

from __future__ import annotations

import time

import pyarrow as pa

from skybuffer.lake.ledger import ReplayGuard, guard_identities


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
