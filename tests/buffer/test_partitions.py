"""Partitions: one account's events always go to one partition, the hash tags spread the
partitions evenly over a cluster's slots, and one partition unclustered is the plain
prefix of old."""

from __future__ import annotations

import orjson
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from skybuffer.buffer.partitions import Partitions, did_of
from skybuffer.settings import load_settings


def _event(did: str, rkey: str) -> bytes:
    body = {"rev": "3l", "operation": "create", "collection": "app.bsky.feed.like", "rkey": rkey}
    return orjson.dumps({"did": did, "time_us": 1, "kind": "commit", "commit": body})


def test_every_event_of_an_account_goes_to_the_same_partition() -> None:
    partitions = Partitions("skybuffer:", 6)
    for n in range(200):
        did = f"did:plc:{n:024d}"
        homes = {partitions.of(_event(did, f"r{i}")) for i in range(5)}
        assert len(homes) == 1
    spread = {partitions.of(_event(f"did:plc:{n:024d}", "r")) for n in range(200)}
    assert spread == set(range(6))


def test_an_event_without_a_did_goes_to_partition_zero() -> None:
    partitions = Partitions("skybuffer:", 3)
    assert partitions.of(b"\xff not json") == 0
    assert did_of(b'{"kind":"identity"}') is None
    assert did_of(_event("did:plc:abc", "r")) == b"did:plc:abc"


def test_the_tags_put_each_partition_in_its_own_share_of_the_slots() -> None:
    for count in (3, 6):
        partitions = Partitions("skybuffer:", count)
        share = REDIS_CLUSTER_HASH_SLOTS / count
        for number in range(count):
            prefix = partitions.prefix(number)
            assert prefix.startswith("skybuffer:{p") and prefix.endswith("}:")
            slot = key_slot(partitions.keys(number).stream("likes").encode())
            assert slot == key_slot(partitions.keys(number).cursor("jetstream").encode())
            assert number * share <= slot < (number + 1) * share


def test_one_partition_is_the_plain_prefix_except_in_a_cluster() -> None:
    plain = Partitions.of_settings(load_settings(redis={"port": 1}).redis)
    assert not plain.partitioned and plain.prefix(0) == "skybuffer:" and plain.name(0) == ""
    clustered = Partitions.of_settings(load_settings(redis={"port": 1, "mode": "cluster"}).redis)
    assert clustered.count == 3 and clustered.partitioned and clustered.name(2) == "p2"
    one = Partitions.of_settings(
        load_settings(redis={"port": 1, "mode": "cluster", "partitions": 1}).redis
    )
    assert one.count == 1 and one.prefix(0).startswith("skybuffer:{p0-")
