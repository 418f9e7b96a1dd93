"""What the local Jetstream serves: a file's events, and what one request selects of them.

``EventFile`` parses a JSONL(.zst) file once (time_us, collection, rev, seq of each line);
``ReplayRequest`` is one /subscribe request's cursor, collections and compression; and
``frames`` yields the events a request gets, in file order, pass after pass when looping
(time_us, revs and seqs shifted so every event of every pass is unique).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson
import zstandard

from skybuffer.errors import ConfigError
from skybuffer.testbed.atproto import tid, tid_value


class Event(NamedTuple):
    time_us: int
    raw: bytes
    collection: str | None
    """None for events that pass every filter (identity, account, unparseable lines)."""
    rev: str | None
    seq: int | None
    tid: int | None = None
    """The rev as a TID number, for loop passes."""


@dataclass
class EventFile:
    """A file's events, parsed once for their time_us, collection, rev and seq."""

    events: list[Event]
    first_us: int
    span_us: int
    """Shift between loop passes: the file's time_us range plus one."""
    seq_span: int

    @classmethod
    def load(cls, path: Path) -> EventFile:
        if not path.is_file():
            raise ConfigError(f"replay-server file {path} does not exist")
        events: list[Event] = []
        last = 0
        for line in _lines(path):
            event = _describe(line, last)
            last = event.time_us
            events.append(event)
        if not events:
            raise ConfigError(f"replay-server file {path} holds no events")
        times = [e.time_us for e in events]
        seqs = [e.seq for e in events if e.seq is not None]
        seq_span = max(seqs) - min(seqs) + 1 if seqs else 1
        return cls(events, min(times), max(times) - min(times) + 1, seq_span)


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as raw:
        handle: BinaryIO = raw
        if path.suffix == ".zst":
            handle = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


def _describe(line: bytes, last_us: int) -> Event:
    """A line that is not a usable event keeps the previous time_us (sent with it)."""
    try:
        event = orjson.loads(line)
        time_us = event["time_us"]
        if type(time_us) is not int:
            raise TypeError
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return Event(last_us, line, None, None, None)
    kind = event.get("kind")
    body = event.get(kind) if isinstance(kind, str) else None
    body = body if isinstance(body, dict) else {}
    if kind == "commit":
        rev = body.get("rev")
        rev = rev if isinstance(rev, str) else None
        return Event(time_us, line, str(body.get("collection")), rev, None, tid_value(rev))
    seq = body.get("seq")
    return Event(time_us, line, None, None, seq if type(seq) is int else None)


@dataclass
class ReplayRequest:
    cursor: int | None
    wanted: tuple[str, ...]
    compress: bool

    @classmethod
    def from_path(cls, path: str) -> ReplayRequest:
        query = parse_qs(urlsplit(path).query)
        try:
            cursor = int(query["cursor"][0]) if "cursor" in query else None
        except ValueError:
            bad = query["cursor"][0]
            raise ValueError(f"cursor must be an integer (unix µs): {bad!r}") from None
        wanted = tuple(c for value in query.get("wantedCollections", []) for c in value.split(","))
        return cls(cursor, wanted, query.get("compress", ["false"])[0] == "true")

    def __post_init__(self) -> None:
        self._exact = frozenset(w for w in self.wanted if not w.endswith(".*"))
        self._prefixes = tuple(w[:-1] for w in self.wanted if w.endswith(".*"))

    def wants(self, collection: str | None) -> bool:
        if collection is None or not self.wanted:
            return True
        return collection in self._exact or collection.startswith(self._prefixes)


def frames(source: EventFile, sub: ReplayRequest, loop: bool) -> Iterator[tuple[int, int, bytes]]:
    """(index in the file, pass, raw event) of what a subscription gets, in order: passes
    of the file from the cursor."""
    span, passes = source.span_us, 0
    if loop and sub.cursor is not None and sub.cursor > source.first_us:
        passes = (sub.cursor - source.first_us) // span
    cursor = sub.cursor
    while True:
        shift = passes * span
        for index, event in enumerate(source.events):
            if (cursor is not None and event.time_us + shift < cursor) or not sub.wants(
                event.collection
            ):
                continue
            raw = _shifted(event, passes, shift, source.seq_span) if passes else event.raw
            yield index, passes, raw
        if not loop:
            return
        passes += 1


def _shifted(event: Event, passes: int, shift: int, seq_span: int) -> bytes:
    """Pass ``passes`` of an event: later time_us, and a later rev or seq, so it is new."""
    raw = event.raw.replace(
        b'"time_us":%d' % event.time_us, b'"time_us":%d' % (event.time_us + shift), 1
    )
    if event.rev is not None:
        new = _shifted_tid(event.tid, shift) if event.tid is not None else f"{event.rev}-{passes}"
        raw = raw.replace(f'"rev":"{event.rev}"'.encode(), f'"rev":"{new}"'.encode(), 1)
    elif event.seq is not None:
        raw = raw.replace(b'"seq":%d' % event.seq, b'"seq":%d' % (event.seq + passes * seq_span), 1)
    return raw


def _shifted_tid(value: int, shift_us: int) -> str:
    """The TID of ``value`` moved ``shift_us`` microseconds later (its clock id kept)."""
    return tid((value >> 10) + shift_us, value & 1023)
