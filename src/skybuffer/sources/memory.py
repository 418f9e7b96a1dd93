"""Events already in memory, as a source: benchmarks time ingest without generation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from skybuffer.sources.base import SourceBatch


class MemorySource:
    """A list of raw events; the position is the index of the next event."""

    name = "memory"

    def __init__(self, events: Sequence[bytes]) -> None:
        self.events = events
        self._start = 0
        self._closed = False

    def resume(self, position: str | None) -> None:
        self._start = int(position) if position else 0
        self._closed = False

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        for start in range(self._start, len(self.events), max_events):
            if self._closed:
                return
            end = min(start + max_events, len(self.events))
            self._start = end  # a second call continues here
            yield SourceBatch(list(self.events[start:end]), str(end))

    def close(self) -> None:
        self._closed = True
