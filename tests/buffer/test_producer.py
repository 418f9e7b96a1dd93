"""The producer's batch script: at most once per batch, fenced by the ingest lease, and
it notices a Redis that forgot confirmed batches (real redis-server).

Also covers: skybuffer.constants (through the behaviour above).
"""

from __future__ import annotations

import pytest
import redis

from skybuffer.buffer.lease import Lease
from skybuffer.buffer.producer import Encoder, Producer
from skybuffer.constants import Keys
from skybuffer.errors import BufferForgot, LeaseLost
from tests.conftest import buffered_events

KEYS = Keys()


def _batch(seq: int, lines: list[bytes]):  # type: ignore[no-untyped-def]
    return Encoder(max_event_bytes=10_000).encode(seq, str(seq * 10), lines)


def test_a_batch_that_landed_before_its_reply_was_lost_is_not_added_again(
    client: redis.Redis, golden_lines: list[bytes]
) -> None:
    producer = Producer(client, KEYS, "replay")
    batch = _batch(1, golden_lines)
    assert producer.write(batch)
    assert not producer.write(batch), "a retry of a batch that landed must be a no-op"
    assert sum(len(v) for v in buffered_events(client).values()) == len(golden_lines)
    assert producer.checkpoint().position == "10"
    assert producer.checkpoint().events == len(golden_lines)


def test_a_batch_that_never_landed_is_written_on_retry(
    client: redis.Redis, golden_lines: list[bytes]
) -> None:
    producer = Producer(client, KEYS, "replay")
    assert producer.write(_batch(1, golden_lines))
    assert sum(len(v) for v in buffered_events(client).values()) == len(golden_lines)
    assert producer.checkpoint().seq == 1


def test_a_cursor_behind_the_last_confirmed_batch_raises_buffer_forgot_with_the_durable_one(
    client: redis.Redis, golden_lines: list[bytes]
) -> None:
    producer = Producer(client, KEYS, "replay")
    for seq in (1, 2, 3):
        producer.write(_batch(seq, golden_lines))
    # What a restart that lost its last second does: the cursor is back at batch 1.
    client.hset(KEYS.cursor("replay"), mapping={"seq": 1, "position": "10", "events": 10})
    with pytest.raises(BufferForgot) as caught:
        producer.write(_batch(4, golden_lines))
    assert caught.value.durable.seq == 1  # type: ignore[attr-defined]
    assert caught.value.durable.position == "10"  # type: ignore[attr-defined]
    assert producer.checkpoint().seq == 1, "nothing of the refused batch was written"


def test_a_producer_whose_lease_passed_to_another_ingester_writes_nothing(
    client: redis.Redis, golden_lines: list[bytes]
) -> None:
    key = KEYS.ingest_lease("replay")
    stale = Lease(client, key, 5, "ingester A")
    stale.acquire(wait=False)
    producer = Producer(client, KEYS, "replay", stale)
    assert producer.write(_batch(1, golden_lines))
    client.delete(key)  # A's lease expired while it was stopped...
    fresh = Lease(client, key, 5, "ingester B")
    fresh.acquire(wait=False)  # ...and B took it
    try:
        with pytest.raises(LeaseLost):
            producer.write(_batch(2, golden_lines))
        assert producer.checkpoint().seq == 1
        assert sum(len(v) for v in buffered_events(client).values()) == len(golden_lines)
    finally:
        fresh.release()
        stale.release()


def test_a_batch_waits_for_its_replicas_and_one_without_them_is_kept_and_counted(
    client: redis.Redis, golden_lines: list[bytes]
) -> None:
    producer = Producer(client, KEYS, "replay", None, replica_acks=(1, 50))
    assert producer.write(_batch(1, golden_lines))  # standalone: no replica will ack
    assert producer.short_acks == 1
    assert producer.checkpoint().seq == 1  # kept: it is in the primary
