"""An outage, as the ingester's operator hears of it: Redis unreachable, full, or unable
to write its AOF, from the first refused batch to the first batch it takes again.

Three kinds of line, and no more, whatever the outage's length: one when it begins
(since when, why, what is held in memory or spooled, whether the source is still read),
one every ``outage_log_seconds`` while it lasts (the same figures, grown), and one when
it ends (how long it lasted, what was spooled and replayed). The reason is Redis's own
words as skybuffer's errors carry them, never an event's bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from skybuffer.errors import BufferCannotPersist, BufferFull

log = logging.getLogger("skybuffer.pipeline.ingest")


@dataclass
class Held:
    """What the ingester holds that Redis has not confirmed."""

    batches: int
    events: int
    spool_bytes: int
    paused: str | None
    """Why the source is not read now (None: it is, and what it reads is held)."""


class Outage:
    """Tracks one source's outages and logs them (begin, every interval, end)."""

    def __init__(self, source: str, spool_path: Path, every_seconds: float) -> None:
        self.source = source
        self.spool_path = spool_path
        self.every_seconds = every_seconds
        self.began: float | None = None
        self.began_wall = 0.0
        self.spooled_batches = 0
        self.spooled_bytes = 0
        self._next_log = 0.0

    @property
    def active(self) -> bool:
        return self.began is not None

    def failed(self, exc: Exception, held: Held) -> None:
        """A batch was refused: begin the outage, or log its progress when due."""
        now = time.monotonic()
        if self.began is None:
            self.began, self.began_wall = now, time.time()
            self.spooled_batches = self.spooled_bytes = 0
            self._next_log = now + self.every_seconds
            log.warning(
                "%s since %s (%s): %s.",
                _kind(exc),
                _clock(self.began_wall),
                _why(exc),
                self._holding(held),
            )
        elif now >= self._next_log:
            self._next_log = now + self.every_seconds
            log.warning(
                "%s for %s (since %s): %s.",
                _kind(exc),
                _duration(now - self.began),
                _clock(self.began_wall),
                self._holding(held),
            )

    def spooled(self, batches: int, size: int) -> None:
        self.spooled_batches += batches
        self.spooled_bytes += size

    def ended(self, replayed_events: int) -> None:
        """Redis took everything held again: log the outage's figures, once."""
        if self.began is None:
            return
        lasted = time.monotonic() - self.began
        self.began = None
        spool = (
            f"{self.spooled_batches} batches ({self.spooled_bytes:,} bytes) were spooled to "
            f"{self.spool_path} and replayed in order"
            if self.spooled_batches
            else "nothing was spooled"
        )
        log.warning(
            "Redis takes source %s's batches again after %s (since %s): %s; "
            "%s held events written.",
            self.source,
            _duration(lasted),
            _clock(self.began_wall),
            spool,
            f"{replayed_events:,}",
        )

    def _holding(self, held: Held) -> str:
        where = f"holding {held.batches} batches ({held.events:,} events) in memory"
        if held.spool_bytes:
            where += f", {held.spool_bytes:,} bytes spooled to {self.spool_path}"
        if held.paused:
            return where + f"; the source is paused ({_PAUSES.get(held.paused, held.paused)})"
        return (
            where
            + "; still reading the source"
            + (f", spooling to {self.spool_path}" if held.batches else "")
        )


_PAUSES = {
    "redis_full": "Redis is at its memory limit",
    "redis_cannot_persist": "Redis cannot write its AOF",
    "spool_full": "the spool is at ingest.spool_max_bytes; the source replays from the cursor",
    "spool_error": "the spool cannot be written; free space on its disk",
}
PAUSE_REASONS = tuple(_PAUSES)


def _kind(exc: Exception) -> str:
    if isinstance(exc, BufferCannotPersist):
        return "Redis cannot write its AOF"
    if isinstance(exc, BufferFull):
        return "Redis is full"
    return "Redis unreachable"


def _why(exc: Exception) -> str:
    if isinstance(exc, BufferCannotPersist):
        return (
            f"{exc.reason}; free space on the disk of Redis's dir, Redis retries every "
            "second by itself"
        )
    return str(exc)


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(wall))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"
