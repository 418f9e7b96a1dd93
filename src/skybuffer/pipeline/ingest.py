"""The ingester: source -> classify/encode -> one Redis transaction per batch.

Guarantees (tests/pipeline/test_ingest.py proves each):
- No loss: a batch leaves the ingester's hands only when Redis confirmed it. While Redis
  refuses writes (OOM, or used memory past the high-water mark) the ingester stops taking
  events from its source and retries with backoff until memory is below the low-water
  mark; the same while Redis cannot write its AOF (a full disk: MISCONF), until Redis's
  own retry succeeds. While Redis is unreachable, batches already taken wait in a bounded
  memory queue, then in the fsync'd on-disk spool, and are written first, in order, on
  recovery.
- Bounded: the spool stops at ``spool_max_bytes``, and a spool whose disk refuses a write
  (full) is not written either; then the ingester stops reading the source, holding only
  its memory queue, until Redis takes the batches again. The source replays from the
  cursor, which never covers a batch that is not in Redis or the spool.
- Explained: an outage is logged when it begins, every ``outage_log_seconds`` while it
  lasts and when it ends (pipeline/outage.py), never with an event's bytes.
- No duplicates: each batch carries a sequence number written with the source position in
  its transaction; a batch whose EXEC outcome is unknown is checked against it.
- Resume: on start the spool is replayed, then the source continues from the cursor.
- Counted: with ``count`` N a run takes N more valid events from wherever the source
  resumes (dead letters are taken too, but do not count towards N); never more.
- One ingester per source cursor: a lease (buffer/lease.py) that every batch's script
  checks, so a second ingester waits or refuses, and a stalled one is fenced out.
- The buffer may forget: every batch's script checks that the cursor is where this
  process left it. When Redis came back without confirmed batches (a restart that lost
  the last second of AOF, a failover to a lagging replica, a restored snapshot), the
  ingester logs it with counts, takes the forgotten events off what it reports, drops
  what it holds for later positions, and rewinds the source to the durable checkpoint.
  The source re-reads the forgotten events (its replay window must cover them); the
  DataWriter keeps the lake free of the duplicates this could make (pipeline/datawriter.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from skybuffer import metrics
from skybuffer.buffer.lease import Lease
from skybuffer.buffer.producer import Checkpoint, Classified, EncodedBatch, Encoder, Producer
from skybuffer.buffer.spool import Spool
from skybuffer.errors import BufferCannotPersist, BufferForgot, BufferFull, RedisUnavailable
from skybuffer.pipeline.holding import Holding
from skybuffer.pipeline.outage import PAUSE_REASONS, Outage
from skybuffer.pipeline.prefetch import Prefetcher
from skybuffer.pipeline.redis_health import RedisHealth
from skybuffer.pipeline.tally import IngestStats, Tally
from skybuffer.settings import IngestSettings
from skybuffer.sources.base import Source

T = TypeVar("T")
log = logging.getLogger(__name__)


class Ingester:
    """Moves events from one source into the buffer; ``run`` returns when told to stop,
    when the source ends, or once ``count`` more valid events are buffered.

    The steps follow ``run`` in the order they run: a pass over the source (recover from
    the cursor and spool, take, finish), writing what is held, then pausing the source
    (backpressure). Holding, health, outages and counts are collaborators of their own."""

    def __init__(
        self,
        producer: Producer,
        source: Source,
        settings: IngestSettings,
        spool: Spool,
        encoder: Encoder | None = None,
        on_batch: Callable[[IngestStats], None] | None = None,
        wait_for_lease: bool = False,
        count: int | None = None,
    ) -> None:
        self.producer = producer
        self.count = count
        self.source = source
        self.settings = settings
        self.spool = spool
        self.encoder = encoder or Encoder(settings.max_event_bytes, settings.codec_level)
        self.wait_for_lease = wait_for_lease
        self.tally = Tally(on_batch)
        self._next_seq = 1
        self.health = RedisHealth(producer, settings)
        self._outage = Outage(producer.source, spool.path, settings.outage_log_seconds)
        self.holding = Holding(spool, settings, self._outage)
        self._held_at_outage = 0

    @property
    def stats(self) -> IngestStats:
        return self.tally.stats

    def run(self, stop: threading.Event | None = None) -> IngestStats:
        stop = stop or threading.Event()
        lease = self.producer.lease
        if lease is not None:
            self._acquire(lease, stop)
        metrics.INGEST_UP.set(1)
        for reason in PAUSE_REASONS:
            metrics.INGEST_SOURCE_PAUSED.labels(reason).set(0)
        try:
            while not self._pass(stop) or not self._finished(stop):
                pass  # Redis forgot: read the source again from the durable cursor
        finally:
            self.source.close()
            metrics.INGEST_UP.set(0)
            if lease is not None:
                lease.release()
        return self.stats

    def _acquire(self, lease: Lease, stop: threading.Event) -> None:
        """Take the source's lease, waiting out a Redis that is unreachable or cannot
        write its AOF (an outage, logged as one); another owner is the lease's business."""
        self._through_outage(stop, lambda: lease.acquire(self.wait_for_lease, stop))

    def _through_outage(self, stop: threading.Event, call: Callable[[], T]) -> T:
        """``call()``, retried while Redis is unreachable or cannot persist (logged as an
        outage) until it answers or ``stop``."""
        while True:
            try:
                return call()
            except (RedisUnavailable, BufferFull) as exc:
                self._outage.failed(exc, self.holding.held(None))
                self.health.wait(stop)
                if stop.is_set():
                    raise

    def _pass(self, stop: threading.Event) -> bool:
        """Read the source from the cursor on, until the valid events still wanted were
        taken; False when Redis forgot and it must be read again from the durable
        checkpoint."""
        try:
            self._recover(stop)
            wanted = None if self.count is None else max(0, self.count - self.stats.events)
            prefetcher = Prefetcher(self.source, self.encoder, self.settings, stop, wanted)
            for classified in prefetcher:
                if not classified.empty:
                    self._take(classified)
                self._flush()
                self._hold_back(stop)
                self._wait_for_room(stop)
                if stop.is_set():
                    break
        except BufferForgot as exc:
            self._forgot(exc)
            return False
        return True

    def _take(self, classified: Classified) -> None:
        batch = self.encoder.pack(self._next_seq, classified)
        self._next_seq += 1
        self.holding.add(batch)

    def _recover(self, stop: threading.Event) -> None:
        """Wait for Redis, replay the spool, and point the source at the cursor."""
        checkpoint = self._through_outage(stop, self.producer.checkpoint)
        self.tally.resume_at(checkpoint.seq, checkpoint.events)
        self._next_seq = checkpoint.seq + 1
        position = checkpoint.position
        replayed = self._replay_spool(stop)
        if replayed is not None:
            position = replayed
        self.source.resume(position)
        where = position or "its start"
        log.info(
            "Ingest resumes source %s at %s (batch %d).",
            self.producer.source,
            where,
            self._next_seq,
        )

    def _replay_spool(self, stop: threading.Event) -> str | None:
        """Write the spooled batches a previous run left; the last position, or None."""
        position = None
        for batch in self.spool.read():
            if batch.seq <= self.tally.landed_seq:
                continue
            if batch.seq != self.tally.landed_seq + 1:
                log.warning(
                    "Spool record %d does not follow the cursor (%d); the source re-reads "
                    "from the cursor instead.",
                    batch.seq,
                    self.tally.landed_seq,
                )
                break
            self._write_until_landed(batch, stop)
            position = batch.position
        self._next_seq = self.tally.landed_seq + 1
        self.spool.clear()
        metrics.INGEST_SPOOL_BYTES.set(0)
        return position

    def _finished(self, stop: threading.Event) -> bool:
        """Flush what is held at the end; False if Redis forgot meanwhile and the source
        must be read again (unless stopping: the next start resumes from the cursor)."""
        try:
            self._finish(stop)
        except BufferForgot as exc:
            self._forgot(exc)
            return stop.is_set()
        return True

    def _forgot(self, exc: BufferForgot) -> None:
        """Redis lost batches it had confirmed: forget them too, and re-read them."""
        durable = exc.durable if isinstance(exc.durable, Checkpoint) else None
        durable_events = durable.events if durable else 0
        lost = max(0, self.tally.landed_events - durable_events)
        batches = self.tally.landed_seq - (durable.seq if durable else 0)
        held = self.holding.clear()
        self.tally.forgot(durable.seq if durable else 0, lost)
        metrics.INGEST_FORGOT.inc()
        metrics.INGEST_FORGOTTEN_EVENTS.inc(lost)
        log.error(
            "Redis forgot %d confirmed batches (%d events) of source %s: %s. Rewinding the "
            "source to the durable checkpoint (%s) to read them again; %d events held for "
            "later positions are re-read too.",
            batches,
            lost,
            self.producer.source,
            exc,
            durable.position if durable else "its start",
            held,
        )

    def _finish(self, stop: threading.Event) -> None:
        """Flush what is held; if Redis stays away, spool it (nothing is lost on exit)."""
        deadline = time.monotonic() + 10
        holding = self.holding
        while holding.pending() and time.monotonic() < deadline:
            self._flush(force=True)
            if holding.pending():
                time.sleep(min(self.health.backoff, 1.0))
        if holding.memory and holding.has_room(whole=True):
            holding.spill()
        if holding.memory:
            holding.leave_to_source()
        elif holding.pending():
            spooled = (self.spool.size(), self.spool.path)
            log.warning(
                "Redis unreachable at shutdown: %d bytes spooled to %s for the next start.",
                *spooled,
            )

    def _flush(self, force: bool = False) -> None:
        """Write held batches in order (spool first: it holds the oldest)."""
        if not self.holding.pending():
            self.health.full = False
            return
        if not force and not self.health.due():
            return
        try:
            if self.spool.size():
                self._flush_spool()
            memory = self.holding.memory
            while memory:
                self._write(memory[0])
                memory.popleft()
            self._healthy()
        except (RedisUnavailable, BufferFull) as exc:
            self._unhealthy(exc)
        metrics.INGEST_PENDING_EVENTS.set(self.holding.events)

    def _flush_spool(self) -> None:
        for batch in self.spool.read():
            if batch.seq > self.tally.landed_seq:
                self._write(batch)
        self.spool.clear()
        metrics.INGEST_SPOOL_BYTES.set(0)

    def _write(self, batch: EncodedBatch) -> None:
        self.tally.landed(batch, counted=self.producer.write(batch))

    def _write_until_landed(self, batch: EncodedBatch, stop: threading.Event) -> None:
        while True:
            try:
                self._write(batch)
                self._healthy()
                return
            except (RedisUnavailable, BufferFull) as exc:
                self._unhealthy(exc)
                self.health.wait(stop)

    def _healthy(self) -> None:
        self.health.answered()
        self.holding.refused = False
        if self._outage.active:
            self._outage.ended(max(0, self.tally.landed_events - self._held_at_outage))

    def _unhealthy(self, exc: Exception) -> None:
        if not self._outage.active:
            self._held_at_outage = self.tally.landed_events
        self._outage.failed(exc, self.holding.held(self._pause_reason(exc)))
        self.health.refused(exc)

    def _hold_back(self, stop: threading.Event) -> None:
        """Stop taking events while Redis is full: wait until below the low-water mark."""
        if not self.health.over_high_water():
            return
        reason = "redis_cannot_persist" if self.health.cannot_persist else "redis_full"
        self._paused(reason, 1)
        self.stats.backpressure_episodes += 1
        began = time.monotonic()
        if not self._outage.active:
            log.warning(
                "Backpressure: Redis is full; not taking events until memory is below "
                "%.0f%% of maxmemory.",
                self.settings.low_water * 100,
            )
        while not stop.is_set():
            self._flush(force=True)
            if not self.holding.memory and not self.health.full and self.health.below_low_water():
                break
            stop.wait(self.health.pause_seconds)
        self.stats.backpressure_seconds += time.monotonic() - began
        self._paused(reason, 0)

    def _wait_for_room(self, stop: threading.Event) -> None:
        """Stop reading the source while the memory queue is full and the spool cannot
        take it (at its limit, or its disk refused): until Redis takes the batches."""
        if not self.holding.full() or self.holding.has_room():
            return
        reason = "spool_error" if self.holding.refused else "spool_full"
        self._paused(reason, 1)
        self.stats.backpressure_episodes += 1
        began = time.monotonic()
        while not stop.is_set() and self.holding.full() and not self.holding.has_room():
            self._flush(force=True)
            if self.holding.full() and self.holding.has_room():
                self.holding.spill()  # Redis took the spool but not yet the memory queue
            stop.wait(self.health.pause_seconds)
        self.stats.backpressure_seconds += time.monotonic() - began
        self._paused(reason, 0)

    def _paused(self, reason: str, value: int) -> None:
        metrics.INGEST_BACKPRESSURE.set(value)
        metrics.INGEST_SOURCE_PAUSED.labels(reason).set(value)

    def _pause_reason(self, exc: Exception) -> str | None:
        """Why the source will not be read after ``exc`` (None: it is, and spooled)."""
        if isinstance(exc, BufferFull):
            return "redis_cannot_persist" if isinstance(exc, BufferCannotPersist) else "redis_full"
        if self.holding.full() and not self.holding.has_room():
            return "spool_error" if self.holding.refused else "spool_full"
        return None
