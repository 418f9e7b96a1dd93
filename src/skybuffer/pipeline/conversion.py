"""Stream entries -> lake rows, where one bad event costs only itself.

The DataWriter converts a chunk of entries at a time (lake/rows.py), a chunk being whole
entries up to ``writer.chunk_bytes`` of decompressed events. Lines that are not usable
events come back as rejects; but some inputs make the whole chunk fail (a byte that is
not UTF-8 fails it entirely, as it fails DuckDB's query). Then the chunk is salvaged
(``Salvage``): entry by entry, and inside a failing entry event by event (bytes that are
not UTF-8 are found directly, anything else by bisection), so exactly the events at fault
are dead-lettered, with their reason, and every other event of the chunk reaches the lake.
A salvaged event's line is replaced by a placeholder, so its neighbours keep their
positions (``stream_index``) and a rerun writes the same rows.

If no event of a chunk converts, the fault is not in the data (the converter itself
failed): the error is raised, so the batch is retried instead of dead-lettered.

Dead letters are bundles (buffer/deadletter.py): the bad events of one entry that share a
reason, encoded as the entry was; when that is all of the entry's events, or the entry
cannot be decoded, the letter is the entry itself, which the commit script copies.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from skybuffer.buffer.codec import Codec, Decoder
from skybuffer.buffer.consumer import Entry
from skybuffer.buffer.deadletter import DeadLetter
from skybuffer.constants import FIELD_COUNT, FIELD_DATA, FIELD_VERSION
from skybuffer.errors import CodecError
from skybuffer.events import InvalidEvent, Reason, check_utf8
from skybuffer.lake.extraction import SqlRowBuilder
from skybuffer.lake.rows import RowBuilder, conversion_errors
from skybuffer.lake.schema import Rows

log = logging.getLogger(__name__)

Builder = RowBuilder | SqlRowBuilder
"""``writer.converter``: msgspec (the default) or DuckDB; the rows are the same."""

PLACEHOLDER = b"null"
"""Stands for a salvaged event: valid UTF-8 that converts (to a reject, dropped here)."""
DETAIL_BYTES = 2000


@dataclass
class Converted:
    """A chunk's rows (None when no event converted) and its dead letters by entry ID."""

    rows: Rows | None
    dead: dict[str, list[DeadLetter]] = field(default_factory=dict)

    @property
    def deadlettered_events(self) -> int:
        return sum(d.events for ds in self.dead.values() for d in ds)


@dataclass
class _BadEvents:
    """The bad events of a chunk: entry ID -> reason -> [(index, line, detail)]."""

    found: dict[str, dict[str, list[tuple[int, bytes, str]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    _indexes: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def add(self, entry_id: str, index: int, reason: str, line: bytes, detail: str) -> None:
        self.found[entry_id][reason].append((index, line, detail))
        self._indexes[entry_id].add(index)

    def indexes(self, entry_id: str) -> set[int]:
        return self._indexes.get(entry_id, set())


class Converter:
    """Converts chunks of one DataWriter's entries (not thread-safe: one per writer)."""

    def __init__(self, stream_name: Callable[[str], str], rows: Builder | None = None) -> None:
        self.stream_name = stream_name
        """type -> stream key, for the dead letters' detail."""
        self.rows = rows or RowBuilder()
        self._events: dict[str, int] = {}
        """Events per entry of the chunk being converted."""
        self.decoder = Decoder()
        self.codec = Codec()

    def close(self) -> None:
        self.rows.close()

    def convert(self, type_: str, chunk: list[Entry]) -> Converted:
        """Rows of the chunk's events (one DuckDB query); dead letters for what cannot be
        used."""
        converted = Converted(None)
        self._events = {}
        ids: list[str] = []
        payloads: list[bytes] = []
        for entry in chunk:
            self._decode(type_, entry, ids, payloads, converted)
        return self._convert(type_, ids, payloads, converted)

    def convert_chunks(
        self, type_: str, entries: Iterable[Entry], chunk_bytes: int
    ) -> Iterator[Converted]:
        """``convert`` over consecutive runs of whole entries holding at least
        ``chunk_bytes`` of decompressed events each (the last may hold less), decoding
        each run only when it is converted: what bounds DuckDB's memory per query whatever
        the batch size. Every entry's dead letters are in the Converted of its run.

        Each entry's compressed payload is released once decoded (its fields keep only
        the event count, all a commit needs), so a batch's memory shrinks as it converts;
        the entries cannot be converted again."""
        converted = Converted(None)
        self._events = {}
        ids: list[str] = []
        payloads: list[bytes] = []
        size = 0
        for entry in entries:
            size += self._decode(type_, entry, ids, payloads, converted)
            if FIELD_COUNT in entry.fields:
                entry.fields = {FIELD_COUNT: entry.fields[FIELD_COUNT]}
            if size >= chunk_bytes:
                yield self._convert(type_, ids, payloads, converted)
                converted, self._events, ids, payloads, size = Converted(None), {}, [], [], 0
        if ids or converted.dead:
            yield self._convert(type_, ids, payloads, converted)

    def _convert(
        self, type_: str, ids: list[str], payloads: list[bytes], converted: Converted
    ) -> Converted:
        if not ids:
            return converted
        bad = _BadEvents()
        rows: Rows | None
        try:
            rows = self.rows.build(type_, ids, payloads)
        except conversion_errors() as exc:
            log.warning(
                "%s: converting %d entries failed (%s); salvaging them event by event.",
                type_,
                len(ids),
                type(exc).__name__,
            )
            rows = Salvage(self.rows, type_).run(ids, payloads, bad, exc)
        if rows is not None:
            for r in rows.rejects:
                if r.stream_index not in bad.indexes(r.stream_id):
                    bad.add(r.stream_id, r.stream_index, r.reason, r.line, "")
        converted.rows = rows
        self._bundle(type_, bad, converted)
        return converted

    def _decode(
        self,
        type_: str,
        entry: Entry,
        ids: list[str],
        payloads: list[bytes],
        converted: Converted,
    ) -> int:
        """Append the entry's payload (or its dead letter); returns the payload's bytes."""
        if not entry.fields:
            return 0  # deleted while pending: only acknowledged
        try:
            payload = self.decoder.payload(entry.fields)
        except CodecError as exc:
            converted.dead[entry.id] = [self._undecodable(type_, entry, exc)]
            return 0
        if payload:
            ids.append(entry.id)
            payloads.append(payload)
            self._events[entry.id] = entry.events
        return len(payload)

    def _undecodable(self, type_: str, entry: Entry, exc: Exception) -> DeadLetter:
        """A whole entry as one bundle, its payload as stored, so nothing is lost."""
        detail = f"entry {entry.id} of {self.stream_name(type_)}: {exc}"[:DETAIL_BYTES]
        try:
            events = int(entry.fields.get(FIELD_COUNT, b"0"))
        except ValueError:
            events = 0
        return DeadLetter.whole_entry(Reason.UNDECODABLE, events, detail)

    def _bundle(self, type_: str, bad: _BadEvents, converted: Converted) -> None:
        stream = self.stream_name(type_)
        for entry_id, reasons in bad.found.items():
            for reason, events in reasons.items():
                events.sort()
                indexes = ",".join(str(i) for i, _, _ in events)
                first = next((d for _, _, d in events if d), "")
                detail = f"events {indexes} of entry {entry_id} of {stream}"
                detail = (detail + (f": {first}" if first else ""))[:DETAIL_BYTES]
                converted.dead.setdefault(entry_id, []).append(
                    self._letter(entry_id, reason, [line for _, line, _ in events], detail)
                )

    def _letter(self, entry_id: str, reason: str, lines: list[bytes], detail: str) -> DeadLetter:
        if len(lines) == self._events.get(entry_id):
            return DeadLetter.whole_entry(reason, len(lines), detail)  # copied in the commit
        fields = self.codec.encode(lines)
        return DeadLetter(reason, fields[FIELD_DATA], detail, fields[FIELD_VERSION], len(lines))


class Salvage:
    """Converts a chunk whose conversion failed as a whole: entry by entry, and inside a
    failing entry event by event (bytes that are not UTF-8 directly, anything else by
    bisection), so exactly the events at fault are found."""

    def __init__(self, rows: Builder, type_: str) -> None:
        self.rows = rows
        self.type = type_

    def run(
        self, ids: list[str], payloads: list[bytes], bad: _BadEvents, failure: BaseException
    ) -> Rows | None:
        """The chunk's rows with each bad event (added to ``bad``) replaced by a
        placeholder; ``failure`` is raised again if every event tested fails."""
        tested = found = 0
        kept: list[bytes] = []
        for entry_id, payload in zip(ids, payloads, strict=True):
            if self._converts([payload]):
                kept.append(payload)
                continue
            lines = payload.split(b"\n")
            for i, line in enumerate(lines):
                try:
                    check_utf8(line)
                except InvalidEvent as exc:
                    bad.add(entry_id, i, exc.reason, line, exc.detail)
            known = bad.indexes(entry_id)
            rest = [i for i in range(len(lines)) if i not in known]
            failing = self._failing(lines, rest)
            tested, found = tested + len(rest), found + len(failing)
            for i, detail in failing.items():
                bad.add(entry_id, i, Reason.UNCONVERTIBLE, lines[i], detail)
            skip = bad.indexes(entry_id)
            kept.append(b"\n".join(PLACEHOLDER if i in skip else x for i, x in enumerate(lines)))
        if tested > 1 and found == tested:
            raise failure
        return self.rows.build(self.type, ids, kept)

    def _converts(self, payloads: list[bytes]) -> bool:
        try:
            self.rows.build(self.type, ["0-0"] * len(payloads), payloads)
        except conversion_errors():
            return False
        return True

    def _failing(self, lines: list[bytes], indexes: list[int]) -> dict[int, str]:
        """The lines among ``indexes`` the conversion fails on alone, by bisection."""
        if not indexes or self._converts([b"\n".join(lines[i] for i in indexes)]):
            return {}
        if len(indexes) == 1:
            try:
                self.rows.build(self.type, ["0-0"], [lines[indexes[0]]])
            except conversion_errors() as exc:
                return {indexes[0]: f"{type(exc).__name__}: {exc}"[:DETAIL_BYTES]}
            return {}
        half = len(indexes) // 2
        return self._failing(lines, indexes[:half]) | self._failing(lines, indexes[half:])
