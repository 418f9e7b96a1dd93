"""Looking at dead letters, exporting them, and replaying the ones this version accepts.

A replay puts a letter's events through both checks they failed — the ingester's
(events.classify) and the DataWriter's (pipeline/conversion.py) — and moves the events
that pass into the streams, as new entries the DataWriter drains like any other. The
letter is deleted in the same script (buffer/deadletter.py ``requeue``), which does
nothing if the letter is gone: so an event is replayed exactly once, even by two replays
at the same time or a replay killed half-way. The events still rejected stay dead
letters (a bundle that was partly accepted is replaced by one of the rest).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from skybuffer.buffer.codec import Codec, Decoder
from skybuffer.buffer.consumer import Entry
from skybuffer.buffer.deadletter import (
    WHOLE_ENTRY,
    DeadLetter,
    DeadLetterStore,
    Selection,
    StoredLetter,
)
from skybuffer.errors import CodecError
from skybuffer.events import InvalidEvent, classify
from skybuffer.pipeline.conversion import Converter
from skybuffer.settings import IngestSettings


@dataclass
class Summary:
    """Letters and events by reason, of a selection."""

    letters: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)

    def add(self, letter: StoredLetter) -> None:
        self.letters[letter.reason] += 1
        self.events[letter.reason] += letter.events

    def as_dict(self) -> dict[str, Any]:
        return {
            "letters": sum(self.letters.values()),
            "events": sum(self.events.values()),
            "by_reason": {
                r: {"letters": self.letters[r], "events": self.events[r]}
                for r in sorted(self.letters)
            },
        }


def summarize(store: DeadLetterStore, selection: Selection) -> Summary:
    summary = Summary()
    for letter in store.scan(selection):
        summary.add(letter)
    return summary


def event_record(letter: StoredLetter, index: int, raw: bytes) -> dict[str, Any]:
    """One exported event: its text when it is UTF-8, else its bytes in base64."""
    record: dict[str, Any] = {
        "letter": letter.id,
        "time": letter.time.isoformat(),
        "reason": letter.reason,
        "source": letter.source,
        "index": index,
        "detail": letter.detail,
    }
    try:
        record["event"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record["event"] = None
        record["raw_base64"] = base64.b64encode(raw).decode()
    return record


def export_records(store: DeadLetterStore, selection: Selection) -> Iterator[dict[str, Any]]:
    """Every event of the selected letters, oldest first; a bundle that cannot be decoded
    is one record with its stored bytes (``undecodable``), so nothing is left out."""
    decoder = Decoder()
    for letter in store.scan(selection):
        yield from letter_records(letter, decoder)


def letter_records(letter: StoredLetter, decoder: Decoder) -> list[dict[str, Any]]:
    """The export records of one letter's events."""
    try:
        events = letter.expand(decoder)
    except CodecError as exc:
        record = event_record(letter, -1, letter.raw) | {"event": None}
        record["raw_base64"] = base64.b64encode(letter.raw).decode()
        codec = letter.codec.decode(errors="replace")
        return [record | {"undecodable": str(exc), "codec": codec}]
    return [event_record(letter, index, raw) for index, raw in enumerate(events)]


@dataclass
class ReplayResult:
    """What a replay did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    letters: int = 0
    """Letters looked at."""
    replayed_letters: int = 0
    """Letters with at least one event accepted (deleted or replaced)."""
    requeued: Counter[str] = field(default_factory=Counter)
    """Events put back into the buffer, by type."""
    still_rejected: Counter[str] = field(default_factory=Counter)
    """Events this version still rejects, by reason (they stay dead letters)."""
    undecodable: int = 0
    """Events in bundles that still cannot be decoded."""
    gone: int = 0
    """Letters replayed by another process meanwhile (nothing done twice)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "letters": self.letters,
            "replayed_letters": self.replayed_letters,
            "requeued_events": sum(self.requeued.values()),
            "requeued_by_type": dict(sorted(self.requeued.items())),
            "still_rejected_by_reason": dict(sorted(self.still_rejected.items())),
            "undecodable_events": self.undecodable,
            "gone": self.gone,
        }


def merged(results: list[ReplayResult], dry_run: bool) -> ReplayResult:
    """Several partitions' replays as one."""
    total = ReplayResult(dry_run=dry_run)
    for one in results:
        total.letters += one.letters
        total.replayed_letters += one.replayed_letters
        total.requeued.update(one.requeued)
        total.still_rejected.update(one.still_rejected)
        total.undecodable += one.undecodable
        total.gone += one.gone
    return total


@dataclass
class Verdict:
    """The current version's view of one letter's events."""

    accepted: dict[str, list[bytes]] = field(default_factory=dict)
    rejected: list[tuple[str, bytes]] = field(default_factory=list)


class Replayer:
    """Replays dead letters into the buffer of one key prefix."""

    def __init__(self, store: DeadLetterStore, ingest: IngestSettings) -> None:
        self.store = store
        self.max_event_bytes = ingest.max_event_bytes
        self.codec = Codec(ingest.codec_level)
        self.decoder = Decoder()
        self.converter = Converter(store.keys.stream)

    def close(self) -> None:
        self.converter.close()

    def replay(
        self,
        selection: Selection,
        dry_run: bool = False,
        progress: Callable[[ReplayResult], None] | None = None,
    ) -> ReplayResult:
        result = ReplayResult(dry_run=dry_run)
        for letter in self.store.scan(selection):
            result.letters += 1
            self._replay_one(letter, result, dry_run)
            if progress is not None and result.letters % 100 == 0:
                progress(result)
        return result

    def _replay_one(self, letter: StoredLetter, result: ReplayResult, dry_run: bool) -> None:
        try:
            events = letter.expand(self.decoder)
        except CodecError:
            result.undecodable += letter.events
            return
        verdict = self.judge(events)
        for reason, _ in verdict.rejected:
            result.still_rejected[reason] += 1
        if not verdict.accepted:
            return
        entries = [(t, len(evs), self.codec.encode(evs)) for t, evs in verdict.accepted.items()]
        if dry_run or self.store.requeue(letter, entries, self._remainder(letter, verdict)):
            result.replayed_letters += 1
            for type_, evs in verdict.accepted.items():
                result.requeued[type_] += len(evs)
        else:
            result.gone += 1
            for reason, _ in verdict.rejected:
                result.still_rejected[reason] -= 1

    def judge(self, events: list[bytes]) -> Verdict:
        """Which events the ingester's and the DataWriter's checks accept now."""
        verdict = Verdict()
        by_type: dict[str, list[bytes]] = {}
        for raw in events:
            try:
                by_type.setdefault(classify(raw, self.max_event_bytes), []).append(raw)
            except InvalidEvent as exc:
                verdict.rejected.append((str(exc.reason), raw))
        for type_, group in by_type.items():
            converted = self.converter.convert(type_, [Entry("0-0", self.codec.encode(group))])
            rows = converted.rows
            kept = set(rows.table["stream_index"].to_pylist()) if rows is not None else set()
            if kept:
                verdict.accepted[type_] = [e for i, e in enumerate(group) if i in kept]
            for bundle in converted.dead.get("0-0", []):
                held = group if bundle.codec == WHOLE_ENTRY else bundle.expand(self.decoder)
                verdict.rejected += [(bundle.reason, e) for e in held]
        return verdict

    def _remainder(self, letter: StoredLetter, verdict: Verdict) -> DeadLetter | None:
        """What stays a dead letter of a partly accepted letter: its rejected events."""
        if not verdict.rejected:
            return None
        reasons = {reason for reason, _ in verdict.rejected}
        reason = reasons.pop() if len(reasons) == 1 else letter.reason
        events = [raw for _, raw in verdict.rejected]
        detail = f"still rejected after a replay of letter {letter.id}: {letter.detail}"[:2000]
        return DeadLetter.bundle(reason, events, detail, self.codec)
