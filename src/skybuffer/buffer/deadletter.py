"""Dead letters: what the pipeline could not take, kept whole in ``skybuffer:deadletter``.

A dead letter is either **one event** (the ingester's rejects: its raw bytes as the source
sent them) or **a bundle**: several events of one stream entry that share a reason, stored
the way the entry stored them (codec-encoded, ``codec`` = the codec version, ``events`` =
how many). The DataWriter writes bundles: its dead letters replace the entry they came
from in the same atomic commit, and a bundle of some of an entry's events is never larger
than the entry, so dead letters found by the writer never add memory to a full Redis. An
entry that cannot be decoded at all is a bundle too (its payload as stored).

Every script that adds or removes dead letters also keeps ``skybuffer:deadletter:events``
(reason -> events), so status and metrics count them by reason without reading them.
A replay (``requeue``) moves a letter's accepted events into the streams and deletes the
letter in one script, which does nothing when the letter is already gone: each event is
replayed at most once, however many replays run at the same time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from skybuffer.buffer.codec import ADD_ENTRIES_LUA, Codec, Decoder
from skybuffer.buffer.lease import redis_call
from skybuffer.constants import (
    DL_CODEC,
    DL_DETAIL,
    DL_EVENTS,
    DL_RAW,
    DL_REASON,
    DL_SOURCE,
    FIELD_COUNT,
    FIELD_DATA,
    FIELD_VERSION,
    Keys,
)
from skybuffer.errors import BufferFull, CodecError

WHOLE_ENTRY = b"=entry"
"""A DataWriter letter's codec before the commit: "all of the entry's events, as stored";
the commit script copies the entry's payload and codec version into the letter."""
LETTER_FIELDS = 6
"""Values each dead letter takes in a script's ARGV: reason, source, raw, detail, codec, events."""

# Pasted into every script that writes dead letters: one XADD with the same six fields
# (Redis stores identical field names once per node) and the count by reason.
ADD_LETTER_LUA = """
local function add_letter(deadletter, letter_counts, argv, i)
  redis.call('XADD', deadletter, '*', '@reason', argv[i], '@source', argv[i + 1],
             '@raw', argv[i + 2], '@detail', argv[i + 3], '@codec', argv[i + 4],
             '@events', argv[i + 5])
  redis.call('HINCRBY', letter_counts, argv[i], tonumber(argv[i + 5]))
end
"""
for _token, _field in (
    ("@reason", DL_REASON),
    ("@source", DL_SOURCE),
    ("@raw", DL_RAW),
    ("@detail", DL_DETAIL),
    ("@codec", DL_CODEC),
    ("@events", DL_EVENTS),
):
    ADD_LETTER_LUA = ADD_LETTER_LUA.replace(_token, _field.decode())

# KEYS: dead-letter stream, dead-letter counts, event counts, then one stream per entry.
# ARGV: the letter's id, reason, events; the entry count; per entry: type, events, field
# count, fields...; then 0 or 1 letter of what is still rejected (six values).
# No allow-oom flag: requeueing adds to the buffer, so at maxmemory Redis refuses it whole.
REQUEUE_SCRIPT = (
    "#!lua\n"
    + ADD_ENTRIES_LUA
    + ADD_LETTER_LUA
    + """
local deadletter, letter_counts, counts = KEYS[1], KEYS[2], KEYS[3]
if redis.call('XDEL', deadletter, ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', letter_counts, ARGV[2], -tonumber(ARGV[3]))
local i = add_entries(KEYS, 3, counts, ARGV, 5, tonumber(ARGV[4]))
if i <= #ARGV then add_letter(deadletter, letter_counts, ARGV, i) end
return 1
"""
)


@dataclass(slots=True)
class DeadLetter:
    """A dead letter before it is written: one event, or a bundle (``codec`` set)."""

    reason: str
    raw: bytes
    detail: str = ""
    codec: bytes = b""
    """Empty: ``raw`` is one event. Otherwise the codec version ``raw`` is encoded with."""
    events: int = 1

    def args(self, source: str) -> list[bytes | str | int]:
        """The six ARGV values of ADD_LETTER_LUA."""
        return [str(self.reason), source, self.raw, self.detail, self.codec, self.events]

    def expand(self, decoder: Decoder) -> list[bytes]:
        return expand(self.raw, self.codec, self.events, decoder)

    @classmethod
    def whole_entry(cls, reason: str, events: int, detail: str) -> DeadLetter:
        """All the events of the entry it is committed with, copied by the commit script."""
        return cls(reason, b"", detail, WHOLE_ENTRY, events)

    @classmethod
    def bundle(cls, reason: str, events: list[bytes], detail: str, codec: Codec) -> DeadLetter:
        """One event as itself; several, encoded the way a stream entry holds them."""
        if len(events) == 1:
            return cls(reason, events[0], detail)
        fields = codec.encode(events)
        return cls(reason, fields[FIELD_DATA], detail, fields[FIELD_VERSION], len(events))


def expand(raw: bytes, codec: bytes, events: int, decoder: Decoder) -> list[bytes]:
    """A letter's events' raw bytes; raises CodecError for a bundle that cannot be decoded."""
    if not codec:
        return [raw]
    fields = {FIELD_VERSION: codec, FIELD_COUNT: str(events).encode(), FIELD_DATA: raw}
    return decoder.decode(fields)


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as read back from the stream."""

    id: str
    reason: str
    source: str
    detail: str
    raw: bytes
    codec: bytes
    events: int

    @property
    def time(self) -> datetime:
        """When it was dead-lettered (its stream ID's milliseconds)."""
        return datetime.fromtimestamp(int(self.id.split("-")[0]) / 1000, UTC)

    @property
    def bundle(self) -> bool:
        return bool(self.codec)

    def expand(self, decoder: Decoder) -> list[bytes]:
        """Its events' raw bytes; raises CodecError for a bundle that cannot be decoded."""
        return expand(self.raw, self.codec, self.events, decoder)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "reason": self.reason,
            "source": self.source,
            "events": self.events,
            "bytes": len(self.raw),
            "bundle": self.bundle,
            "detail": self.detail,
        }


def from_fields(entry_id: str, fields: Mapping[bytes, bytes]) -> StoredLetter:
    """A letter from its stream fields (older letters have no codec/events: one event)."""
    return StoredLetter(
        id=entry_id,
        reason=fields.get(DL_REASON, b"").decode(errors="replace"),
        source=fields.get(DL_SOURCE, b"").decode(errors="replace"),
        detail=fields.get(DL_DETAIL, b"").decode(errors="replace"),
        raw=fields.get(DL_RAW, b""),
        codec=fields.get(DL_CODEC, b""),
        events=int(fields.get(DL_EVENTS, b"1") or 1),
    )


@dataclass(frozen=True)
class Selection:
    """Which letters a command looks at: reasons (empty: all) and a time window (ms)."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    ids: frozenset[str] = frozenset()

    def matches(self, letter: StoredLetter) -> bool:
        return (not self.reasons or letter.reason in self.reasons) and (
            not self.ids or letter.id in self.ids
        )


class DeadLetterStore:
    """The dead-letter stream of one key prefix: read, count, requeue."""

    PAGE = 200

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._requeue = client.register_script(REQUEUE_SCRIPT)

    def counts(self) -> dict[str, int]:
        """Dead-lettered events by reason (what the scripts counted)."""
        raw = redis_call(self.client.hgetall, self.keys.deadletter_counts)
        counts = {k.decode(): int(v) for k, v in raw.items()}
        return {reason: n for reason, n in sorted(counts.items()) if n}

    def entries(self) -> int:
        return int(redis_call(self.client.xlen, self.keys.deadletter))

    def scan(self, selection: Selection = Selection()) -> Iterator[StoredLetter]:
        """Matching letters, oldest first, read a page at a time."""
        low = "-" if selection.since_ms is None else f"{selection.since_ms}-0"
        high = "+" if selection.until_ms is None else f"{selection.until_ms}-18446744073709551615"
        while True:
            page = redis_call(self.client.xrange, self.keys.deadletter, low, high, count=self.PAGE)
            for entry_id, fields in page:
                letter = from_fields(_text(entry_id), fields)
                if selection.matches(letter):
                    yield letter
            if len(page) < self.PAGE:
                return
            low = "(" + _text(page[-1][0])

    def get(self, letter_id: str) -> StoredLetter | None:
        page = redis_call(self.client.xrange, self.keys.deadletter, letter_id, letter_id)
        return from_fields(_text(page[0][0]), page[0][1]) if page else None

    def requeue(
        self,
        letter: StoredLetter,
        entries: Sequence[tuple[str, int, dict[bytes, bytes]]],
        remainder: DeadLetter | None,
    ) -> bool:
        """Atomically: delete ``letter``, append ``entries`` (type, events, fields) to
        their streams, and add ``remainder`` (what is still rejected). False when the
        letter was gone already (replayed by someone else): then nothing was added."""
        keys = [self.keys.deadletter, self.keys.deadletter_counts, self.keys.event_counts]
        args: list[bytes | str | int] = [letter.id, letter.reason, letter.events, len(entries)]
        for type_, events, fields in entries:
            keys.append(self.keys.stream(type_))
            args += [type_, events, len(fields)]
            for name, value in fields.items():
                args += [name, value]
        if remainder is not None:
            args += remainder.args(letter.source)
        try:
            return bool(redis_call(self._requeue, keys=keys, args=args))
        except redis.exceptions.OutOfMemoryError as exc:
            raise BufferFull(
                "Redis is at maxmemory: replay dead letters once the DataWriter has drained "
                "the buffer"
            ) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["CodecError", "DeadLetter", "DeadLetterStore", "Selection", "StoredLetter"]
