"""What a drain did: per type (rows, files, bytes, entries, dead letters, time, errors)
and in all, as the CLI, the Prefect flow and the benchmarks report it; and the metrics and
log line of each committed batch."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from skybuffer import metrics
from skybuffer.buffer.consumer import Commit, ReadBatch
from skybuffer.buffer.deadletter import DeadLetter
from skybuffer.lake.writer import WrittenFile
from skybuffer.processes import peak_rss_bytes

log = logging.getLogger("skybuffer.pipeline.datawriter")  # the DataWriter's own lines


@dataclass
class TypeResult:
    """What a drain of one type did."""

    type: str
    rows: int = 0
    files: int = 0
    bytes: int = 0
    entries: int = 0
    batches: int = 0
    deadletters: int = 0
    trimmed: int = 0
    replayed: int = 0
    """Events dropped as copies of events the lake already held (after Redis forgot)."""
    seconds: float = 0.0
    partitions: list[str] = field(default_factory=list)
    budget_exhausted: bool = False
    error: str | None = None

    def add(self, files: list[WrittenFile], commit: Commit, trimmed: int) -> None:
        """Count one committed batch."""
        self.batches += 1
        self.entries += commit.entries
        self.rows += sum(f.rows for f in files)
        self.files += len(files)
        self.bytes += sum(f.bytes for f in files)
        self.deadletters += commit.deadletters
        self.trimmed += trimmed
        self.partitions = sorted({*self.partitions, *(f.partition for f in files)})


@dataclass
class DrainResult:
    """Per-type results of one drain; ``ok`` when no type failed."""

    types: dict[str, TypeResult] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.error is None for r in self.types.values())

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.types.values())

    @property
    def errors(self) -> dict[str, str]:
        return {t: r.error for t, r in self.types.items() if r.error is not None}

    @property
    def outcome(self) -> str:
        """success, failure, or timeout (a type ran out of the budget)."""
        if any(r.budget_exhausted for r in self.types.values()):
            return "timeout"
        return "success" if self.ok else "failure"

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "peak_rss_bytes": peak_rss_bytes(),
            "types": {t: asdict(r) for t, r in self.types.items()},
        }


def record_batch(
    batch: ReadBatch,
    files: list[WrittenFile],
    dead: dict[str, list[DeadLetter]],
    letters: int,
    seconds: float,
) -> None:
    """The metrics and the log line of one committed batch."""
    rows = sum(f.rows for f in files)
    size = sum(f.bytes for f in files)
    if letters:
        for letter in (d for ds in dead.values() for d in ds):
            metrics.DEADLETTER_EVENTS.labels(str(letter.reason)).inc(letter.events)
    ids = batch.ids
    log.info(
        "%s: %d rows in %d files (%d bytes) from %d entries %s..%s, %d dead letters, %.2fs.",
        batch.type,
        rows,
        len(files),
        size,
        len(ids),
        ids[0],
        ids[-1],
        letters,
        seconds,
    )
