"""The DataWriter's consumer: group reads split the work, commits are atomic and exact.

Also covers: skybuffer.buffer.drain_scripts, skybuffer.buffer.stream_ids (through the
behaviour above).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import redis

from skybuffer.buffer.codec import Codec
from skybuffer.buffer.consumer import StreamConsumer
from skybuffer.buffer.deadletter import DeadLetter
from skybuffer.buffer.lease import Lease
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import DL_CODEC, DL_DETAIL, DL_EVENTS, DL_RAW, DL_REASON, DL_SOURCE, Keys
from skybuffer.errors import BufferForgot

KEYS = Keys()
LIKE = (
    b'{"did":"did:plc:a","time_us":1779719009132431,"kind":"commit","commit":{"rev":"r",'
    b'"operation":"create","collection":"app.bsky.feed.like","rkey":"k","record":{}}}'
)


def add(client: redis.Redis, entries: int, events: int = 4, type_: str = "likes") -> list[str]:
    """Buffer entries as the producer does: XADD plus the event count, atomically."""
    codec, ids = Codec(), []
    for _ in range(entries):
        pipe = client.pipeline(transaction=True)
        pipe.xadd(KEYS.stream(type_), codec.encode([LIKE] * events))  # type: ignore[arg-type]
        pipe.hincrby(KEYS.event_counts, type_, events)
        ids.append(pipe.execute()[0].decode())
    return ids


def counted(client: redis.Redis, type_: str = "likes") -> int:
    return int(client.hget(KEYS.event_counts, type_) or 0)


def consumer(client: redis.Redis, name: str = "w1", **kwargs: float) -> StreamConsumer:
    return StreamConsumer(client, KEYS, name, read_count=50, **kwargs)  # type: ignore[arg-type]


def test_the_group_sees_entries_buffered_before_it_existed_and_survives_recreation(
    client: redis.Redis,
) -> None:
    ids = add(client, 3)
    first = consumer(client)
    assert first.read_batch("likes", 100).ids == ids
    first.ensure_group("likes")  # BUSYGROUP is fine, and the position is kept
    assert consumer(client, "w2").read_batch("likes", 100).ids == []
    assert consumer(client).read_batch("posts", 100).ids == []  # MKSTREAM: no error


def test_a_stream_redis_no_longer_has_gets_its_group_again_when_its_last_id_is_asked(
    client: redis.Redis,
) -> None:
    ids = add(client, 2)
    reader = consumer(client)
    assert reader.last_id("likes") == ids[-1]
    client.delete(KEYS.stream("likes"))  # a replica promoted before its first sync
    assert reader.last_id("likes") == "0-0"
    assert reader.read_batch("likes", 100).ids == []


def test_a_batch_stops_at_the_event_limit_plus_at_most_one_entry(client: redis.Redis) -> None:
    add(client, 10, events=4)
    batch = consumer(client).read_batch("likes", 10)
    assert (len(batch.entries), batch.events) == (3, 12)


def test_entries_read_but_not_committed_open_the_next_batch_in_stream_order(
    client: redis.Redis,
) -> None:
    ids = add(client, 3)
    reader = consumer(client)
    assert reader.read_batch("likes", 4).ids == ids[:1]  # then the writer "crashes"
    ids += add(client, 2)
    assert consumer(client).read_batch("likes", 100).ids == ids


def test_two_consumers_split_new_entries_and_never_share_one(client: redis.Redis) -> None:
    ids = add(client, 6)
    one, two = consumer(client, "w1"), consumer(client, "w2")
    first, second = one.read_batch("likes", 8), two.read_batch("likes", 8)
    assert first.ids and second.ids and not set(first.ids) & set(second.ids)
    one.commit("likes", first.entries)
    two.commit("likes", second.entries)
    rest = one.read_batch("likes", 100).ids + two.read_batch("likes", 100).ids
    assert sorted(first.ids + second.ids + rest) == ids


def test_entries_pending_in_a_dead_consumer_are_claimed_only_after_the_idle_time(
    client: redis.Redis,
) -> None:
    ids = add(client, 3)
    consumer(client, "dead").read_batch("likes", 100)
    assert consumer(client, "patient", claim_idle_seconds=60).read_batch("likes", 100).ids == []
    time.sleep(0.2)
    claimed = consumer(client, "heir", claim_idle_seconds=0.1).read_batch("likes", 100)
    assert claimed.ids == ids


def test_commit_acks_deletes_and_decrements_the_event_counts_together(
    client: redis.Redis,
) -> None:
    add(client, 3, events=4)
    reader = consumer(client)
    done = reader.commit("likes", reader.read_batch("likes", 100).entries)
    assert (done.entries, done.events) == (3, 12)
    assert client.xlen(KEYS.stream("likes")) == 0
    assert client.xpending(KEYS.stream("likes"), "datawriter")["pending"] == 0
    assert counted(client) == 0


def test_committing_the_same_entries_twice_counts_them_once(client: redis.Redis) -> None:
    add(client, 2, events=5)
    reader = consumer(client)
    batch = reader.read_batch("likes", 100)
    reader.commit("likes", batch.entries)
    again = consumer(client, "w2").commit("likes", batch.entries)  # e.g. a claimed duplicate
    assert (again.entries, again.events) == (0, 0)
    assert counted(client) == 0


def test_dead_letters_are_written_with_the_commit_of_their_entry(client: redis.Redis) -> None:
    entry_id = add(client, 1)[0]
    reader = consumer(client)
    letter = DeadLetter("undecodable_entry", b"\x00raw", f"entry {entry_id}: corrupt", b"1", 3)
    done = reader.commit("likes", reader.read_batch("likes", 100).entries, {entry_id: [letter]})
    assert done.deadletters == 3  # events, not letters
    [(_, fields)] = client.xrange(KEYS.deadletter)
    assert fields == {
        DL_REASON: b"undecodable_entry",
        DL_SOURCE: b"datawriter",
        DL_RAW: b"\x00raw",
        DL_DETAIL: f"entry {entry_id}: corrupt".encode(),
        DL_CODEC: b"1",
        DL_EVENTS: b"3",
    }
    assert client.hgetall(KEYS.deadletter_counts) == {b"undecodable_entry": b"3"}


def test_trim_never_removes_an_entry_that_is_pending_or_not_yet_delivered(
    client: redis.Redis,
) -> None:
    ids = add(client, 5)
    stream = KEYS.stream("likes")
    reader = consumer(client)
    reader.read_batch("likes", 8)  # entries 0 and 1 become pending
    client.xack(stream, "datawriter", ids[0])  # acknowledged but not deleted
    assert reader.trim("likes") == 1
    assert [i.decode() for i, _ in client.xrange(stream)] == ids[1:]
    client.xack(stream, "datawriter", ids[1])
    reader.trim("likes")
    assert [i.decode() for i, _ in client.xrange(stream)] == ids[2:]  # never delivered: kept


def test_a_deleted_stream_heals_its_group_on_the_next_read(client: redis.Redis) -> None:
    reader = consumer(client)
    reader.read_batch("likes", 100)
    client.delete(KEYS.stream("likes"))
    ids = add(client, 2)
    assert reader.read_batch("likes", 100).ids == ids


def test_a_full_redis_can_be_drained_although_it_refuses_transactions(
    start_redis: Callable[..., ManagedRedis],
) -> None:
    server = start_redis(maxmemory="4mb")
    full = server.client()
    codec, stream = Codec(), KEYS.stream("likes")
    with pytest.raises(redis.ResponseError, match="maxmemory"):
        for _ in range(200):  # incompressible 64 KB entries until Redis refuses
            full.xadd(stream, {**codec.encode([LIKE]), b"d": os.urandom(65536)})
    reader = consumer(full)  # its group is created at maxmemory too
    batch = reader.read_batch("likes", 10_000)
    pipe = full.pipeline(transaction=True)
    pipe.xack(stream, "datawriter", batch.ids[0]).xdel(stream, batch.ids[0])
    pipe.hincrby(KEYS.event_counts, "likes", -1)
    with pytest.raises(redis.ResponseError, match="maxmemory"):
        pipe.execute()  # why commit is a script: MULTI is refused at maxmemory
    assert reader.commit("likes", batch.entries).entries == len(batch.entries)
    reader.trim("likes")
    assert full.xlen(stream) == 0
    full.xadd(stream, codec.encode([LIKE]))  # and the buffer takes writes again


def test_a_leased_commit_of_entries_redis_lost_since_the_read_is_refused(
    client: redis.Redis,
) -> None:
    """A Redis that restarted without its last second lost entries a writer had read: the
    commit must not succeed (and raise the type's committed mark past them), or the lake
    would keep their rows while the source replays their events into new entries."""
    ids = add(client, 3)
    lease = Lease(client, KEYS.writer_lease, 30, "DataWriter test")
    lease.acquire(wait=False)
    reader = StreamConsumer(client, KEYS, "w1", read_count=50, lease=lease)
    batch = reader.read_batch("likes", 100)
    client.xdel(KEYS.stream("likes"), ids[2])  # what the restarted Redis no longer holds
    with pytest.raises(BufferForgot, match="no longer in Redis"):
        reader.commit("likes", batch.entries)
    assert reader.committed("likes") == "0-0"
    assert client.xlen(KEYS.stream("likes")) == 2  # nothing committed
