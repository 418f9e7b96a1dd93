"""Who acts and what they point at: the actors and popular posts of one seed.

200k actors; who acts is Zipf-like, P(rank r) ∝ 1/(r + 50). Liked, reposted, quoted and
replied-to posts come from a pool of 50k posts per hour of ``time_us`` with P ∝ 1/(r + 5),
and ``via`` from a pool of reposts built the same way; follows, blocks and mentions target
accounts with P ∝ 1/(r + 20). Actors and pooled posts are pure functions of (seed, rank)
and (seed, hour, rank) via blake2b, held in bounded memos, so any event can be rebuilt
without its predecessors. The record helpers (``created``, ``create``...) live here too:
every record shape (testbed/records.py) is built through them.
"""

from __future__ import annotations

import hashlib
import random

import orjson

from skybuffer.testbed.atproto import (
    DAY_US,
    HOUR_US,
    POST,
    RECORD_CID,
    REPOST,
    Event,
    Memo,
    b32,
    commit_event,
    iso,
    make_cid,
    odd_time,
    tid,
)

ACTORS, ACTOR_SKEW = 200_000, 50
POOL, POOL_SKEW, TARGET_SKEW = 50_000, 5, 20


def zipf(u: float, base: float, skew: int) -> int:
    """Rank r >= 0 with P(r) ∝ 1/(r + skew) by inverting the continuous law: O(1), no table.

    ``base`` is (n + skew) / skew for a population of n (r = n only by float rounding,
    and is then one more valid identity).
    """
    return int(skew * base**u) - skew


ACTOR_BASE = (ACTORS + ACTOR_SKEW) / ACTOR_SKEW
TARGET_BASE = (ACTORS + TARGET_SKEW) / TARGET_SKEW
POOL_BASE = (POOL + POOL_SKEW) / POOL_SKEW


class Population:
    """The actors and pools of one seed; all it memoises is a pure function of the seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.dids = Memo(self._did)
        self.posts = Memo(lambda key: self._pooled(POST, key))
        self.reposts = Memo(lambda key: self._pooled(REPOST, key))

    def _did(self, rank: int) -> str:
        digest = b32(hashlib.blake2b(f"{self.seed}/did/{rank}".encode(), digest_size=24).digest())
        return f"did:web:{digest[:10]}.net" if rank % 499 == 7 else "did:plc:" + digest

    def target(self, rng: random.Random) -> str:
        return self.dids[zipf(rng.random(), TARGET_BASE, TARGET_SKEW)]

    def ref(self, rng: random.Random, t: int) -> orjson.Fragment:
        """A pooled post strongRef for dict records (orjson embeds the memoised JSON)."""
        return orjson.Fragment(self.ref_json(rng, t, self.posts))

    @staticmethod
    def ref_json(rng: random.Random, t: int, pool: Memo) -> str:
        """A strongRef into this hour's pool: popular entries repeat with identical bytes."""
        return pool[(t // HOUR_US) << 20 | zipf(rng.random(), POOL_BASE, POOL_SKEW)]

    def _pooled(self, collection: str, key: int) -> str:
        hour, rank = key >> 20, key & 0xFFFFF
        seed = f"{self.seed}/{collection}/{hour}/{rank}".encode()
        digest = hashlib.blake2b(seed, digest_size=64).digest()
        author = self.dids[zipf(int.from_bytes(digest[52:60]) / 2**64, ACTOR_BASE, ACTOR_SKEW)]
        age = int((digest[60] / 256) ** 2 * 2 * DAY_US) + digest[61] * 1000
        rkey = tid(hour * HOUR_US - age, digest[62] * 4)
        return (
            f'{{"cid":"{make_cid(RECORD_CID, digest)}","uri":"at://{author}/{collection}/{rkey}"}}'
        )

    @staticmethod
    def created(rng: random.Random, t: int) -> tuple[str, int]:
        """createdAt: the client's clock, a little before Jetstream saw the commit."""
        c_us = t - 100_000 - int(rng.random() ** 3 * 3_000_000)
        return (odd_time(rng, c_us) if rng.random() < 0.001 else iso(c_us)), c_us

    @staticmethod
    def create(
        rng: random.Random, did: str, t: int, coll: str, c_us: int, record: Event, cid: str
    ) -> Event:
        clock = rng.getrandbits(10)
        return commit_event(
            did, t, tid(t - 20_000, clock), "create", coll, tid(c_us, clock), record, cid
        )

    @staticmethod
    def create_json(
        rng: random.Random, did: str, t: int, coll: str, c_us: int, record: str, cid: str
    ) -> bytes:
        """``create`` for the hot small types, formatted directly (all parts are ASCII)."""
        clock = rng.getrandbits(10)
        return (
            f'{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":'
            f'"{tid(t - 20_000, clock)}","operation":"create","collection":"{coll}","rkey":'
            f'"{tid(c_us, clock)}","record":{record},"cid":"{cid}"}}}}'
        ).encode()
