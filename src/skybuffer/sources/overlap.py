"""The resume window of a Jetstream source: the cursor, and the overlap dropped on resume.

Jetstream v1 resumes from a ``time_us`` cursor, and the right cursor is not simply the
newest ``time_us`` buffered: real output is not ordered by ``time_us`` (events of one
second arrive shuffled, and the replay-to-live cutover reorders them, jetstream-legacy#42),
and two hosts stamp one event with different ``time_us``. So a resume rewinds a few
seconds and drops what it has already buffered, recognising it by *identity*, never by
comparing ``time_us`` with the checkpoint (that would drop the late events the rewind is
there to catch).

Guarantee: every event admitted with ``time_us >= floor`` has its identity in the window;
a resume asks for ``time_us >= floor`` (same host) and drops each event whose identity is
in the window, so it neither duplicates nor skips an event up to ``rewind`` late. On
another host it asks from ``floor + guard`` so that an event the new host stamped up to
``guard`` later is still recognised (hosts see events within milliseconds of each other).

The window travels in the position, which the ingester writes with every batch, so a
``kill -9`` resumes just as exactly. Size: 8 base64 characters (a 6-byte blake2b digest)
per event of the last ``rewind`` seconds, capped at ``max_ids`` (beyond which the
rewind shrinks to what the ids cover); docs/JETSTREAM.md has the measurements.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

import orjson

from skybuffer.errors import ConfigError

WIRE = "v1"
"""Jetstream wire of the cursor: a v2 (seq) cursor must never be read as a v1 time_us."""
ID_BYTES = 6
"""48-bit digests: with 4,096 ids a new event is mistaken for an old one with odds of
1 in 7e10, a lost event per ~70 billion events checked in an overlap."""

_ID_CHARS = ID_BYTES * 4 // 3


def host_tag(url: str) -> str:
    """A short stable name of a host URL for the position (no query string)."""
    return hashlib.blake2b(url.split("?", 1)[0].encode(), digest_size=4).hexdigest()


# Jetstream writes a commit's envelope in this order; matching it is twice as fast as a
# parse. Escapes never occur in DIDs, NSIDs, rkeys or revs (their syntax forbids them),
# and anything that does not match exactly takes the parse below, to the same identity.
_COMMIT = re.compile(
    rb'\{"did":"([^"\\]*)","time_us":(\d+),"kind":"commit","commit":\{"rev":"([^"\\]*)",'
    rb'"operation":"([a-z]+)","collection":"([^"\\]*)","rkey":"([^"\\]*)"'
)


def identity(raw: bytes) -> tuple[bytes, int | None]:
    """(digest, time_us) of a raw event; time_us is None when the event has none.

    A commit is (did, collection, rkey, rev, operation): the same on every host. Identity
    and account events carry the relay's seq. Anything else, or an event that does not
    parse, is named by its bytes (the ingester dead-letters what does not parse).
    """
    match = _COMMIT.match(raw)
    if match is not None:
        did, time_us, rev, operation, collection, rkey = match.groups()
        return _digest(b"\x1f".join((did, collection, rkey, rev, operation))), int(time_us)
    return _parsed_identity(raw)


def _parsed_identity(raw: bytes) -> tuple[bytes, int | None]:
    try:
        event = orjson.loads(raw)
        time_us = event.get("time_us")
        kind = event.get("kind")
        body = event.get(kind) if isinstance(kind, str) else None
    except (orjson.JSONDecodeError, AttributeError):
        return _digest(raw), None
    time_us = time_us if type(time_us) is int else None
    did = event.get("did")
    if kind == "commit" and isinstance(body, dict) and "rev" in body:
        parts = (
            did,
            body.get("collection"),
            body.get("rkey"),
            body.get("rev"),
            body.get("operation"),
        )
        key = "\x1f".join(str(part) for part in parts)
    elif kind in ("identity", "account") and isinstance(body, dict) and "seq" in body:
        key = f"{did}\x1f{kind}\x1f{body.get('seq')}"
    else:
        return _digest(raw), time_us
    return _digest(key.encode()), time_us


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=ID_BYTES).digest()


@dataclass(frozen=True)
class ResumePoint:
    """What a reconnect needs from the window (an immutable copy for the reader thread)."""

    floor_us: int | None
    max_us: int | None
    host: str
    guard_us: int

    def cursor(self, url: str) -> int | None:
        """The v1 cursor to send to ``url``; None means live (nothing buffered yet)."""
        if self.floor_us is None or self.max_us is None:
            return None
        if not self.host or host_tag(url) == self.host:
            return self.floor_us
        return min(self.floor_us + self.guard_us, self.max_us)


class Overlap:
    """Admitted events' identities over the last ``rewind`` of time_us (consumer thread).

    Its life in order: ``restore`` a position, ``admit`` each event, write ``position()``
    with every batch (and hand the reader a ``resume_point()`` at each reconnect)."""

    def __init__(self, rewind_us: int, guard_us: int, max_ids: int) -> None:
        self.rewind_us = rewind_us
        self.guard_us = guard_us
        self.max_ids = max_ids
        self.max_us: int | None = None
        self.floor_us: int | None = None
        self.host = ""
        self._ids: dict[bytes, int] = {}
        self.duplicates = 0

    def restore(self, position: str | None) -> None:
        """Load a position written by ``position()``; None starts live with an empty window."""
        self._ids, self.max_us, self.floor_us, self.host = {}, None, None, ""
        if position is None:
            return
        self.floor_us, self.max_us, self.host, packed = _decode(position)
        # Their own time_us is not kept: they stay until the floor passes the newest.
        stamp = self.max_us or 0
        for start in range(0, len(packed), ID_BYTES):
            self._ids[packed[start : start + ID_BYTES]] = stamp

    def admit(self, raw: bytes) -> bool:
        """True when ``raw`` is new (and now remembered); False for an event already had."""
        digest, time_us = identity(raw)
        if digest in self._ids:
            self.duplicates += 1
            return False
        if time_us is None:  # placed where it arrived, so a replay of it is still caught
            time_us = self.max_us or 0
        if self.max_us is None or time_us > self.max_us:
            self.max_us = time_us
        if self.floor_us is None or time_us >= self.floor_us:
            self._ids[digest] = time_us
        return True

    def position(self) -> str:
        """The window as a compact string: ``v1:floor:max:host:ids``."""
        self._trim()
        if self.max_us is None:
            return f"{WIRE}::::"
        ids = base64.urlsafe_b64encode(b"".join(self._ids)).decode("ascii")
        return f"{WIRE}:{self.floor_us}:{self.max_us}:{self.host}:{ids}"

    def resume_point(self) -> ResumePoint:
        self._trim()
        return ResumePoint(self.floor_us, self.max_us, self.host, self.guard_us)

    def _trim(self) -> None:
        """Forget ids below the window; cap them, moving the floor up to what they cover."""
        if self.max_us is None:
            return
        floor = max(self.max_us - self.rewind_us, self.floor_us or 0)
        ids = self._ids
        if len(ids) > self.max_ids:
            stamps = sorted(ids.values(), reverse=True)
            floor = max(floor, stamps[self.max_ids - 1])
        if any(stamp < floor for stamp in ids.values()):
            self._ids = {d: stamp for d, stamp in ids.items() if stamp >= floor}
        self.floor_us = floor


def _decode(position: str) -> tuple[int | None, int | None, str, bytes]:
    """(floor, max, host, packed ids) of ``v1:floor:max:host:ids``; ConfigError for a
    cursor of another wire or a corrupt one."""
    wire, _, rest = position.partition(":")
    if wire != WIRE:
        raise ConfigError(
            f"the jetstream cursor {position[:40]!r} is not a Jetstream {WIRE} cursor "
            f"(wire {wire!r}); cursors are not portable between wire versions. Delete "
            "the key skybuffer:cursor:jetstream to start from the live tail."
        )
    try:
        floor, top, host, ids = rest.split(":")
        bounds = (int(floor), int(top)) if top else (None, None)
        packed = base64.urlsafe_b64decode(ids)
    except ValueError:
        raise ConfigError(f"the jetstream cursor {position[:60]!r} is corrupt") from None
    return bounds[0], bounds[1], host, packed
