"""What the ingester knows of Redis between writes: whether it refused the last one
(unreachable, full, or unable to write its AOF), when to try again (exponential backoff
up to ``ingest.backoff_max_seconds``), and whether its memory is past the high-water mark
(checked at most every ``MEMORY_CHECK_SECONDS``, and never counted as an outage)."""

from __future__ import annotations

import threading
import time

from skybuffer import metrics
from skybuffer.buffer.producer import Producer
from skybuffer.errors import BufferCannotPersist, BufferFull, RedisUnavailable
from skybuffer.settings import IngestSettings

MEMORY_CHECK_SECONDS = 0.5
FIRST_BACKOFF_SECONDS = 0.05


class RedisHealth:
    """The ingester's view of its Redis (not thread-safe: the ingester's)."""

    def __init__(self, producer: Producer, settings: IngestSettings) -> None:
        self.producer = producer
        self.settings = settings
        self.full = False
        """Redis refused the last write for memory or persistence (BufferFull)."""
        self.last_refusal: Exception | None = None
        self.backoff = FIRST_BACKOFF_SECONDS
        self._retry_at = 0.0
        self._memory_checked = 0.0

    def answered(self) -> None:
        """A write landed: Redis is healthy again."""
        self.full = False
        self.backoff = FIRST_BACKOFF_SECONDS
        self._retry_at = 0.0
        metrics.INGEST_REDIS_UP.set(1)

    def refused(self, exc: Exception) -> None:
        """A write failed with ``exc``: try again after the backoff, which doubles."""
        self.last_refusal = exc
        self.full = isinstance(exc, BufferFull)
        metrics.INGEST_REDIS_UP.set(0 if isinstance(exc, RedisUnavailable) else 1)
        self._retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, self.settings.backoff_max_seconds)

    def due(self) -> bool:
        """Whether the backoff after the last refusal has passed."""
        return time.monotonic() >= self._retry_at

    def wait(self, stop: threading.Event) -> None:
        """Wait out the backoff (or until ``stop``), then double it."""
        stop.wait(self.backoff)
        self.backoff = min(self.backoff * 2, self.settings.backoff_max_seconds)

    @property
    def pause_seconds(self) -> float:
        """How long a paused ingester waits between two looks."""
        return min(self.backoff, self.settings.backoff_max_seconds)

    @property
    def cannot_persist(self) -> bool:
        return self.full and isinstance(self.last_refusal, BufferCannotPersist)

    def over_high_water(self) -> bool:
        if self.full:
            return True
        now = time.monotonic()
        if now - self._memory_checked < MEMORY_CHECK_SECONDS:
            return False
        self._memory_checked = now
        try:
            return self.producer.memory_fraction() >= self.settings.high_water
        except RedisUnavailable:
            return False  # the flush path handles unreachability

    def below_low_water(self) -> bool:
        try:
            return self.producer.memory_fraction() < self.settings.low_water
        except RedisUnavailable:
            return False
