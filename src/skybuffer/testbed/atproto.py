"""atproto's identifiers and envelopes as the synthetic events need them, made fast.

CIDs (base32 of random bytes, canonical head and tail), TIDs (53-bit µs + 10-bit clock id,
base32-sortable), ISO timestamps as clients write createdAt (and the odd ones some write),
and a Jetstream v1 commit envelope. Prefixes are memoised in bounded ``Memo``s, so a
value costs a dict lookup and memory stays flat in an endless run.
"""

from __future__ import annotations

import random
import time
from base64 import b32encode
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]

LIKE, POST, REPOST = "app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.feed.repost"
FOLLOW, BLOCK = "app.bsky.graph.follow", "app.bsky.graph.block"
LISTITEM, PROFILE = "app.bsky.graph.listitem", "app.bsky.actor.profile"
RECORD_CID, BLOB_CID = "bafyrei", "bafkrei"  # CIDv1 dag-cbor / raw, sha2-256, base32
HOUR_US, DAY_US = 3_600_000_000, 86_400_000_000
MEMO_MAX = 120_000  # entries per memo (<= ~30 MB each), then it starts over

# base32 with one random byte per char: bytes.translate runs in C, while base64.b32encode
# is a Python loop on 3.11. Head and tail tables keep cids canonical: after the codec
# header the first char holds 3 digest bits, and the last one ends in 2 zero bits.
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
_B32 = bytes(_ALPHABET[b & 31] for b in range(256))
_CID_HEAD = bytes(_ALPHABET[b & 7] for b in range(256))
_CID_TAIL = bytes(_ALPHABET[(b & 7) * 4] for b in range(256))
_TO_SORTABLE = bytes.maketrans(_ALPHABET.upper(), b"234567abcdefghijklmnopqrstuvwxyz")
_PAIR = [
    a + b for a in "234567abcdefghijklmnopqrstuvwxyz" for b in "234567abcdefghijklmnopqrstuvwxyz"
]


class Memo(dict[int, str]):
    """A bounded memo of pure values: a miss computes, a full memo simply starts over."""

    def __init__(self, make: Callable[[int], str]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: int) -> str:
        if len(self) >= MEMO_MAX:
            self.clear()
        value = self[key] = self._make(key)
        return value


def b32(raw: bytes) -> str:
    return raw.translate(_B32).decode("ascii")


def make_cid(prefix: str, raw: bytes) -> str:
    """A canonical CID string from 52 random bytes (7 + 52 chars, like atproto's)."""
    body = bytearray(raw[:52].translate(_B32))
    body[0], body[51] = _CID_HEAD[raw[0]], _CID_TAIL[raw[51]]
    return prefix + body.decode("ascii")


def cid_block(rng: random.Random, count: int) -> str:
    """The 52-char bodies of ``count`` cids (a chunk) in three C-level passes (``make_cid``)."""
    raw = rng.randbytes(52 * count)
    body = bytearray(raw.translate(_B32))
    body[0::52] = raw[0::52].translate(_CID_HEAD)
    body[51::52] = raw[51::52].translate(_CID_TAIL)
    return body.decode("ascii")


_TID_HEADS = Memo(
    lambda high: b32encode((high << 37).to_bytes(9)).translate(_TO_SORTABLE)[:7].decode()
)
_SECONDS = Memo(lambda second: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def tid(us: int, clock: int) -> str:
    """atproto TID (53-bit µs + 10-bit clock id, 13 base32-sortable chars); the first 7
    chars change every ~1.05 s, so they are memoised."""
    return _TID_HEADS[us >> 20] + _PAIR[(us >> 10) & 1023] + _PAIR[us & 1023] + _PAIR[clock]


def iso(us: int) -> str:
    """ISO 8601 UTC with milliseconds, as the Bluesky app writes createdAt."""
    return _SECONDS[us // 1_000_000] + _MILLIS[us // 1000 % 1000]


def odd_time(rng: random.Random, us: int) -> str:
    """What some clients put in createdAt; downstream must survive it."""
    second = _SECONDS[us // 1_000_000]
    return rng.choice(
        ["0001-01-01T00:00:00Z", f"{second}+09:00", f"{second}.123456789Z", second[:10]]
    )


def commit_event(
    did: str, t: int, rev: str, op: str, coll: str, rkey: str, record: Event | None, cid: str
) -> Event:
    """A Jetstream v1 commit event; a delete has no record and no cid."""
    body: Event = {"rev": rev, "operation": op, "collection": coll, "rkey": rkey}
    if record is not None:
        body |= {"record": record, "cid": cid}
    return {"did": did, "time_us": t, "kind": "commit", "commit": body}


_TID_VALUE = {c: i for i, c in enumerate("234567abcdefghijklmnopqrstuvwxyz")}


def tid_value(tid: str | None) -> int | None:
    """An atproto TID (53-bit µs, 10-bit clock id, base32-sortable) as a number; None if
    the string is not one."""
    if tid is None or len(tid) != 13 or any(c not in _TID_VALUE for c in tid):
        return None
    value = 0
    for c in tid:
        value = value << 5 | _TID_VALUE[c]
    return value
