"""Stream entry encoding: compressed micro-batches of raw events, versioned.

Why micro-batches: one stream entry per event costs ~625 bytes of Redis memory per
realistic event (JSON plus entry overhead) and one XADD per event. Packing the events of
one type and one ingest batch into a single entry and compressing them with zstd (with
Jetstream's own dictionary, which helps the small batches of rare types) measures well
under the 180 bytes/event target and turns thousands of XADDs into a handful.
docs/ARCHITECTURE.md has the measurements behind the choice.

Entry fields (identical names on every entry, so Redis stores them once per node):
    v  codec version (b"1")
    n  number of events in the entry
    d  the payload

Version 1 payload: zstd( event_1 \\n event_2 \\n ... ) with the Jetstream v1 dictionary.
Newline framing is safe because raw newlines cannot occur inside JSON strings: any
newline in a valid event is insignificant whitespace and is replaced by a space before
encoding (the JSON value is unchanged). A new version gets a new number; decode keeps
reading every older one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources

import zstandard

from skybuffer.constants import CODEC_LEVEL, FIELD_COUNT, FIELD_DATA, FIELD_VERSION
from skybuffer.errors import CodecError

# Pasted into the scripts that append encoded entries (the ingester's batch, a dead-letter
# replay): from argv[i], n entries of type, events, field count k and k name/value pairs,
# each XADDed to keys[first + e] with its type's event count; returns the next index.
ADD_ENTRIES_LUA = """
local function add_entries(keys, first, counts, argv, i, n)
  for e = 1, n do
    local type_, events, k = argv[i], argv[i + 1], tonumber(argv[i + 2])
    redis.call('XADD', keys[first + e], '*', unpack(argv, i + 3, i + 2 + 2 * k))
    redis.call('HINCRBY', counts, type_, events)
    i = i + 3 + 2 * k
  end
  return i
end
"""

CURRENT_VERSION = 1


@cache
def jetstream_dictionary() -> zstandard.ZstdCompressionDict:
    """Jetstream's v1 zstd dictionary (MIT, bluesky-social/jetstream), shipped with us."""
    data = resources.files("skybuffer").joinpath("data/jetstream_v1.zdict").read_bytes()
    return zstandard.ZstdCompressionDict(data)


class Codec:
    """Encodes lists of raw events into stream entry fields (not thread-safe: one each)."""

    version = CURRENT_VERSION
    default_level = CODEC_LEVEL

    def __init__(self, level: int = CODEC_LEVEL) -> None:
        self._compressor = zstandard.ZstdCompressor(
            level=level, dict_data=jetstream_dictionary(), write_checksum=True
        )

    def encode(self, events: Sequence[bytes]) -> dict[bytes, bytes]:
        payload = b"\n".join(events)
        if payload.count(b"\n") != len(events) - 1 or b"\r" in payload:
            payload = b"\n".join(_one_line(e) for e in events)
        return {
            FIELD_VERSION: b"1",
            FIELD_COUNT: str(len(events)).encode(),
            FIELD_DATA: self._compressor.compress(payload),
        }


def _one_line(event: bytes) -> bytes:
    if b"\n" in event or b"\r" in event:
        return event.replace(b"\n", b" ").replace(b"\r", b" ")
    return event


class Decoder:
    """Decodes entries of every codec version (not thread-safe: one each)."""

    def __init__(self) -> None:
        self._v1 = zstandard.ZstdDecompressor(dict_data=jetstream_dictionary())

    def decode(self, fields: Mapping[bytes, bytes]) -> list[bytes]:
        payload = self.payload(fields)
        return payload.split(b"\n") if payload else []

    def payload(self, fields: Mapping[bytes, bytes]) -> bytes:
        """The events newline-joined, checked against the count, without one Python
        object per event (what the DataWriter hands DuckDB)."""
        version = fields.get(FIELD_VERSION)
        if version != b"1":
            raise CodecError(f"unknown codec version {version!r} (fields {sorted(fields)!r})")
        try:
            payload = self._v1.decompress(fields[FIELD_DATA])
            expected = int(fields[FIELD_COUNT])
        except (KeyError, ValueError, zstandard.ZstdError) as exc:
            raise CodecError(f"corrupt v1 entry: {exc}") from None
        held = payload.count(b"\n") + 1 if payload else 0
        if held != expected:
            raise CodecError(f"v1 entry says {expected} events but holds {held}")
        return payload


def event_count(fields: Mapping[bytes, bytes]) -> int:
    """Events in an entry without decompressing it."""
    try:
        return int(fields[FIELD_COUNT])
    except (KeyError, ValueError):
        raise CodecError(f"entry without a valid event count: {sorted(fields)!r}") from None
