"""The codec round-trips any events and stays readable across versions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skybuffer.buffer.codec import Codec, Decoder, event_count
from skybuffer.constants import FIELD_COUNT, FIELD_DATA, FIELD_VERSION
from skybuffer.errors import CodecError

# JSON documents never hold a raw newline except as whitespace; the codec turns such
# whitespace into spaces, so round trips are exact for newline-free events.
event_bytes = st.binary(min_size=1, max_size=2000).filter(
    lambda b: b"\n" not in b and b"\r" not in b
)


@settings(max_examples=200, deadline=None)
@given(st.lists(event_bytes, min_size=1, max_size=50), st.integers(min_value=1, max_value=9))
def test_encode_then_decode_returns_the_same_events(events: list[bytes], level: int) -> None:
    fields = Codec(level).encode(events)
    assert event_count(fields) == len(events)
    assert Decoder().decode(fields) == events


def test_every_entry_has_the_same_field_names(golden_lines: list[bytes]) -> None:
    a = Codec().encode(golden_lines[:3])
    b = Codec().encode(golden_lines[3:])
    assert list(a) == list(b) == [FIELD_VERSION, FIELD_COUNT, FIELD_DATA]


def test_whitespace_newlines_inside_an_event_become_spaces() -> None:
    event = b'{"did":\n"did:plc:a",\r\n"time_us":1}'
    assert Decoder().decode(Codec().encode([event])) == [
        event.replace(b"\n", b" ").replace(b"\r", b" ")
    ]


def test_golden_events_round_trip_exactly(golden_lines: list[bytes]) -> None:
    assert Decoder().decode(Codec().encode(golden_lines)) == golden_lines


@pytest.mark.parametrize(
    "fields",
    [
        {FIELD_VERSION: b"9", FIELD_COUNT: b"1", FIELD_DATA: b"x"},
        {FIELD_VERSION: b"1", FIELD_COUNT: b"1", FIELD_DATA: b"not zstd"},
        {FIELD_VERSION: b"1", FIELD_COUNT: b"2", FIELD_DATA: Codec().encode([b"{}"])[FIELD_DATA]},
        {FIELD_VERSION: b"1"},
    ],
)
def test_undecodable_entries_raise_codec_error(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(CodecError):
        Decoder().decode(fields)
