"""Synthetic Jetstream v1 events: deterministic, seekable, and calibrated on real traffic.

The generator of the testbed: ``generate`` (a list) and ``Factory.chunk`` (what
sources/synthetic.py's ``SyntheticSource`` streams). The shapes are testbed/records.py,
the actors and pools testbed/population.py, the identifiers testbed/atproto.py.

Benchmarks, chaos tests and the laptop demo need a source that behaves like the network
(same shapes, sizes, type mix and repetition, so compression and Parquet figures mean
something) without a network, and that replays byte for byte from a cursor.

Calibration (research/bluesky-jetstream.md §1.2, §3.2, §3.3 and golden_v1.jsonl):

* Mix (``MIX``): likes 69 %, posts 12 %, reposts 10 %, follows 6 %, blocks 1 %, other 2 %
  (profile updates, list items, threadgates, fm.teal plays, identity, account). Deletes
  are 2.6 % of all events and carry no record and no cid; updates are 1.3 %.
* Sizes: likes ~530 B (17 % carry ``via``), reposts ~570 B (40 % ``via``), post creates
  ~805 B (30 % replies, 44 % embeds, 26 % facets, 7 languages, emoji in 30 %; texts skewed
  short, median ~100 and at most ~270 code points), follows/blocks ~395 B, deletes ~200 B;
  ~550 B overall.
* Popularity: 200k actors; who acts is Zipf-like, P(rank r) ∝ 1/(r + 50), so heavy users
  repeat. Liked, reposted, quoted and replied-to posts come from a pool of 50k posts per
  hour of ``time_us`` with P ∝ 1/(r + 5): the top post collects ~2 % of the hour's likes,
  and every like of it carries the identical subject uri + cid, as on the network. ``via``
  points into a pool of reposts built the same way. Follows, blocks and mentions target
  accounts with P ∝ 1/(r + 20). About 0.2 % of the actors are did:web.
* Time: event i has ``time_us = start_us + i * step_us``, ``step_us = round(1e6 / rate)``
  (rate 1500/s when unpaced); ``createdAt`` is 0.1-3.1 s earlier (the client's clock) and
  0.1 % of the values are odd (year 1, offsets, nanoseconds, a bare date).

Determinism and seeking: events are made in chunks of 1024, and chunk c draws only from
``random.Random(f"{seed}:{c}")``. Actors and pooled posts are pure functions of
(seed, rank) and (seed, hour, rank) via blake2b, held in bounded memos, so any event can be
regenerated without its predecessors and memory stays flat in an endless run.

Speed, one core of the 2-core dev VM: ~160k events/s while the memos fill (first ~200k
events), ~190k/s over millions. Cids are one ``randbytes`` block per chunk mapped to base32
by ``bytes.translate``; TIDs and timestamps come from memoised prefixes; likes, reposts,
follows and blocks are formatted directly; the rest goes through orjson.
"""

from __future__ import annotations

import random
from bisect import bisect_right

import orjson

from skybuffer.testbed.atproto import RECORD_CID, cid_block
from skybuffer.testbed.population import ACTOR_BASE, ACTOR_SKEW, Population
from skybuffer.testbed.records import BUILDERS, CUMULATIVE

CHUNK = 1024
DEFAULT_RATE = 1500.0


class Factory(Population):
    """Builds the events of one seed, a chunk at a time."""

    def chunk(self, index: int, start_us: int, step_us: int) -> list[bytes]:
        """Events index*CHUNK .. index*CHUNK+1023, independent of every other chunk."""
        rng = random.Random(f"{self.seed}:{index}")
        draw, dids, cids = rng.random, self.dids, cid_block(rng, CHUNK)
        first_t = start_us + index * CHUNK * step_us
        out: list[bytes] = []
        for k in range(CHUNK):
            build = BUILDERS[bisect_right(CUMULATIVE, draw())]
            did = dids[int(ACTOR_SKEW * ACTOR_BASE ** draw()) - ACTOR_SKEW]  # zipf inlined
            event = build(
                self, rng, did, first_t + k * step_us, RECORD_CID + cids[52 * k : 52 * k + 52]
            )
            # Copying orjson's output is ~7x faster than keeping it when many are kept
            # (orjson 3.13): its oversized buffers would otherwise keep growing the heap.
            out.append(event if type(event) is bytes else bytes(memoryview(orjson.dumps(event))))
        return out


def generate(seed: int, count: int, start_us: int, *, rate: float = DEFAULT_RATE) -> list[bytes]:
    """Events 0..count-1 exactly as ``SyntheticSource(seed, rate, start_us=...)`` yields them."""
    factory, step = Factory(seed), step_us(rate)
    chunks = (factory.chunk(index, start_us, step) for index in range(-(-count // CHUNK)))
    return [event for chunk in chunks for event in chunk][:count]


def step_us(rate: float) -> int:
    """Microseconds of event time between two events at ``rate`` (0: unpaced, 1500/s)."""
    return max(1, round(1e6 / (rate if rate > 0 else DEFAULT_RATE)))
