"""What an ingest run has done, counted exactly even when Redis forgets.

``events`` counts the valid events Redis confirmed for this run, ``deadletters`` the
source's items that became dead letters (confirmed too). When Redis comes back without
its last batches, the run takes exactly those off its figures (they are read again),
from a record of its last ``LANDED_KEPT`` landed batches; past that record, it takes the
lost events off the valid count.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from skybuffer import metrics
from skybuffer.buffer.producer import EncodedBatch

LANDED_KEPT = 4096
"""Batches whose counts a run keeps, to take exactly what Redis forgot off its figures
(a lost second of AOF is a few hundred batches even at the benchmark's rate)."""


@dataclass
class IngestStats:
    """What a run did: ``events`` counts valid events confirmed by Redis, ``deadletters``
    the source's items that became dead letters (confirmed too); ``received`` is both."""

    events: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    deadletters: int = 0
    batches: int = 0
    raw_bytes: int = 0
    backpressure_seconds: float = 0.0
    backpressure_episodes: int = 0
    forgotten: int = 0
    """Events Redis had confirmed and then forgot (re-read from the source)."""
    rewinds: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def received(self) -> int:
        return self.events + self.deadletters


class Tally:
    """The run's figures, and where the buffer's cursor stands (the last landed batch)."""

    def __init__(self, on_batch: Callable[[IngestStats], None] | None = None) -> None:
        self.stats = IngestStats()
        self.on_batch = on_batch
        self.landed_seq = 0
        """The batch number the cursor holds."""
        self.landed_events = 0
        """The events the cursor counts (all runs)."""
        self._landed: deque[tuple[int, int, int]] = deque(maxlen=LANDED_KEPT)
        """(seq, valid events, dead letters) counted by this run up to each landed batch."""
        self._first_seq: int | None = None

    def resume_at(self, seq: int, events: int) -> None:
        """The cursor as Redis holds it, at a (re)start of the source."""
        self.landed_seq, self.landed_events = seq, events
        if self._first_seq is None:
            self._first_seq = seq
        self._landed.append((seq, self.stats.events, self.stats.deadletters))

    def landed(self, batch: EncodedBatch, counted: bool) -> None:
        """``batch`` is in Redis; ``counted`` unless an earlier attempt had landed it."""
        if counted:
            self._count(batch)
        self.landed_seq = batch.seq
        self.landed_events += batch.events
        self._landed.append((batch.seq, self.stats.events, self.stats.deadletters))

    def forgot(self, durable_seq: int, lost: int) -> None:
        """Redis went back to batch ``durable_seq``, ``lost`` events fewer."""
        self._uncount(durable_seq, lost)
        self.stats.forgotten += lost
        self.stats.rewinds += 1

    def _uncount(self, durable_seq: int, lost: int) -> None:
        """Take the forgotten batches off the run's valid events and dead letters (they
        are read again): exactly from the record of the run's last batches, or, past
        what it keeps, all ``lost`` off the valid events."""
        stats = self.stats
        while self._landed and self._landed[-1][0] > durable_seq:
            self._landed.pop()
        if self._landed:
            _, stats.events, stats.deadletters = self._landed[-1]
        elif self._first_seq is not None and durable_seq < self._first_seq:
            stats.events = stats.deadletters = 0  # all this run counted was forgotten
        else:
            stats.events = max(0, stats.events - lost)

    def _count(self, batch: EncodedBatch) -> None:
        stats = self.stats
        stats.events += sum(batch.counts.values())
        stats.batches += 1
        stats.raw_bytes += batch.raw_bytes
        stats.deadletters += len(batch.deadletters)
        stats.by_type.update(batch.counts)
        for type_, count in batch.counts.items():
            metrics.INGEST_EVENTS.labels(type_).inc(count)
        for dead in batch.deadletters:
            metrics.DEADLETTER_EVENTS.labels(str(dead.reason)).inc()
        metrics.INGEST_BYTES.inc(batch.raw_bytes)
        metrics.INGEST_BATCH_SECONDS.observe(time.monotonic() - batch.started)
        metrics.INGEST_LAST_EVENT_TIME.set(time.time())
        if self.on_batch is not None:
            self.on_batch(stats)
