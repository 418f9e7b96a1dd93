"""The batches an ingester took from the source that Redis has not confirmed yet.

In order: the on-disk spool holds the oldest (written while Redis was away), the memory
queue what came after. When the memory queue is full it moves to the spool, up to
``ingest.spool_max_bytes``; past that, or when the spool's disk refuses a write, the
ingester stops reading the source (Jetstream replays from the cursor) instead of growing
without bound.
"""

from __future__ import annotations

import logging
from collections import deque

from skybuffer import metrics
from skybuffer.buffer.producer import EncodedBatch
from skybuffer.buffer.spool import Spool
from skybuffer.pipeline.outage import Held, Outage
from skybuffer.settings import IngestSettings

log = logging.getLogger("skybuffer.pipeline.ingest")  # the ingester's lines, as outage.py's


class Holding:
    """The memory queue and the spool of one ingester (not thread-safe: the ingester's)."""

    def __init__(self, spool: Spool, settings: IngestSettings, outage: Outage) -> None:
        self.spool = spool
        self.settings = settings
        self.outage = outage
        self.memory: deque[EncodedBatch] = deque()
        self.refused = False
        """The spool's disk refused the last write (retried at exit and after recovery)."""

    @property
    def events(self) -> int:
        """Events in the memory queue."""
        return sum(b.events for b in self.memory)

    def add(self, batch: EncodedBatch) -> None:
        self.memory.append(batch)
        if self.full() and self.has_room():
            self.spill()

    def pending(self) -> bool:
        return bool(self.memory) or self.spool.size() > 0

    def clear(self) -> int:
        """Drop everything held (Redis forgot: the source is read again); the events the
        memory queue held."""
        held = self.events
        self.memory.clear()
        self.spool.clear()
        metrics.INGEST_SPOOL_BYTES.set(0)
        metrics.INGEST_PENDING_EVENTS.set(0)
        return held

    def leave_to_source(self) -> None:
        """At exit with a spool that is full or refused: the batches held in memory are
        after everything spooled, so the next start re-reads them from the source."""
        events = sum(b.events for b in self.memory)
        log.warning(
            "Redis unreachable at shutdown and the spool full or failing: %d batches (%d "
            "events) not kept; the next start re-reads them from the source, after the %d "
            "bytes spooled to %s.",
            len(self.memory),
            events,
            self.spool.size(),
            self.spool.path,
        )
        self.memory.clear()

    def spill(self) -> None:
        """Move the memory queue to the spool (it is older than anything taken later).
        A disk that refuses (full) keeps it in memory, and the source is not read until
        Redis takes it (the ingester's ``_wait_for_room``)."""
        try:
            size = self.spool.append(list(self.memory))
        except OSError as exc:
            if not self.refused:
                log.error(
                    "Cannot write the spool %s (%s): not reading the source until Redis "
                    "takes the %d batches held in memory; free space on its disk.",
                    self.spool.path,
                    exc.strerror or exc,
                    len(self.memory),
                )
            self.refused = True
            return
        self.refused = False
        self.outage.spooled(len(self.memory), size)
        self.memory.clear()
        metrics.INGEST_SPOOL_BYTES.set(self.spool.size())

    def full(self) -> bool:
        return len(self.memory) > self.settings.memory_queue_batches

    def has_room(self, whole: bool = False) -> bool:
        """Would the memory queue fit under ``spool_max_bytes``? Never while the spool's
        disk refuses writes (retried at exit, ``whole``, and after each recovery)."""
        if self.refused and not whole:
            return False
        incoming = sum(_spool_bytes(b) for b in self.memory)
        return self.spool.size() + incoming <= self.settings.spool_max_bytes

    def held(self, paused: str | None) -> Held:
        events = sum(b.events for b in self.memory)
        return Held(len(self.memory), events, self.spool.size(), paused)


def _spool_bytes(batch: EncodedBatch) -> int:
    """About what ``batch`` takes in the spool (its payload and a small header)."""
    payload = sum(len(v) for fields in batch.entries.values() for v in fields.values())
    return payload + sum(len(d.raw) + len(d.detail) for d in batch.deadletters) + 256
