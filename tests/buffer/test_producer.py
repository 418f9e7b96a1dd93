"""A batch whose EXEC outcome was unknown is not written twice (real redis-server)."""

from __future__ import annotations

import redis

from skybuffer.buffer.producer import Encoder, Producer
from skybuffer.constants import Keys
from tests.conftest import buffered_events

KEYS = Keys()


def test_a_batch_that_landed_before_its_reply_was_lost_is_not_added_again(
    client: redis.Redis, golden_lines: list[bytes]
) -> None:
    producer = Producer(client, KEYS, "replay")
    batch = Encoder(max_event_bytes=10_000).encode(1, "10", golden_lines)
    assert producer.write(batch)
    batch.attempted = True  # as after a connection error during EXEC
    assert not producer.write(batch)
    assert sum(len(v) for v in buffered_events(client).values()) == len(golden_lines)
    assert producer.checkpoint().position == "10"


def test_a_batch_that_never_landed_is_written_on_retry(
    client: redis.Redis, golden_lines: list[bytes]
) -> None:
    producer = Producer(client, KEYS, "replay")
    batch = Encoder(max_event_bytes=10_000).encode(1, "10", golden_lines)
    batch.attempted = True  # EXEC outcome unknown, but the cursor says it did not land
    assert producer.write(batch)
    assert sum(len(v) for v in buffered_events(client).values()) == len(golden_lines)
    assert producer.checkpoint().seq == 1
