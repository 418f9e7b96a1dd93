"""Partitions of the buffer: which one an event belongs to, and each one's key prefix.

With ``redis.partitions`` P > 1, events are spread by a hash of their DID, so all of one
account's events stay in one partition, in order (as Bluesky's AppView spread its Redis
streams). Each partition is a hash-tagged key prefix (``skybuffer:{p0-…}:``) holding its
own streams, cursor, leases and counters: every transaction stays in one Redis Cluster
slot. The tags are chosen so that partition i's slot falls in the i-th P-th of the slot
space: ``redis-cli --cluster create`` gives each primary an equal, contiguous share, so
3 or 6 partitions spread evenly over 3 primaries (plain ``{p0}``, ``{p1}``, ``{p2}``
would put two of three on one primary). P = 1 is the plain prefix, as before.

An event without a DID (nothing parseable) goes to partition 0, so it is dead-lettered
exactly once.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cached_property

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from skybuffer.constants import Keys
from skybuffer.errors import ConfigError
from skybuffer.settings import RedisSettings

_ENVELOPE = b'{"did":"'
_DID = re.compile(rb'"did"\s*:\s*"([^"\\]{1,2048})"')


def did_of(raw: bytes) -> bytes | None:
    """The DID of a raw Jetstream event (its first ``"did"`` field: the envelope's, which
    Jetstream writes first), or None."""
    if raw.startswith(_ENVELOPE):  # Jetstream's own order: no search needed
        end = raw.find(b'"', len(_ENVELOPE))
        if end > 0 and b"\\" not in raw[len(_ENVELOPE) : end]:
            return raw[len(_ENVELOPE) : end]
    match = _DID.search(raw, 0, 4096)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Partitions:
    """P partitions under one base prefix."""

    base: str
    count: int = 1
    tagged: bool = False
    """Hash-tag even one partition (Redis Cluster needs every prefix in one slot)."""

    @classmethod
    def of_settings(cls, settings: RedisSettings) -> Partitions:
        count = settings.partition_count
        return cls(settings.prefix, count, tagged=settings.mode == "cluster")

    def of(self, raw: bytes) -> int:
        """The partition of a raw event: a stable hash of its DID."""
        if self.count == 1:
            return 0
        did = did_of(raw)
        return zlib.crc32(did) % self.count if did is not None else 0

    def prefix(self, partition: int) -> str:
        if not self.partitioned:
            return self.base
        return f"{self.base}{{{self.tags[partition]}}}:"

    def keys(self, partition: int) -> Keys:
        return Keys(self.prefix(partition))

    @property
    def partitioned(self) -> bool:
        return self.count > 1 or self.tagged

    def name(self, partition: int) -> str:
        """A short name for files, logs and labels: p0, p1, … ('' unpartitioned)."""
        return f"p{partition}" if self.partitioned else ""

    def names(self) -> list[str]:
        return [self.name(i) for i in range(self.count)]

    @cached_property
    def tags(self) -> list[str]:
        return [_tag(i, self.count) for i in range(self.count)]

    def stranded(self, client: redis.Redis) -> dict[str, int]:
        """Events buffered on ``client``'s server under prefixes of another layout (an
        earlier ``redis.partitions``), which nothing of this layout would ever drain."""
        mine = {self.prefix(p) for p in range(self.count)}
        found: dict[str, int] = {}
        for key in client.scan_iter(match=f"{self.base}*events", count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            prefix = name.removesuffix("events")
            if prefix in mine or prefix.endswith("deadletter:") or ":ops:" in prefix:
                continue  # ours, a dead-letter count, or the toolkit's scratch keys
            events = sum(int(v) for v in client.hgetall(name).values())
            if events:
                found[prefix] = events
        return found

    def refuse_stranded(self, client: redis.Redis) -> None:
        """ConfigError naming the fix when another layout's events wait in this Redis."""
        stranded = self.stranded(client)
        if stranded:
            where = ", ".join(f"{n:,} under {p!r}" for p, n in sorted(stranded.items()))
            raise ConfigError(
                f"Redis holds events of another partition layout ({where}) that "
                f"redis.partitions = {self.count} would never drain: set redis.partitions "
                "back to what wrote them and drain them (`skybuffer write --once`) first"
            )


def _tag(partition: int, count: int) -> str:
    """``p{i}-{n}`` with the smallest n whose slot lies in partition i's share."""
    share = REDIS_CLUSTER_HASH_SLOTS / count
    low, high = partition * share, (partition + 1) * share
    n = 0
    while True:
        tag = f"p{partition}-{n}"
        if low <= key_slot(tag.encode()) < high:
            return tag
        n += 1
