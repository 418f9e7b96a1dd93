"""Live Bluesky events from Jetstream v1 (/subscribe), resumable without gap or duplicate.

The pieces:

* ``subscription.Subscription`` reads the websocket on a background thread (reconnects,
  backoff with jitter, host failover, keepalive, receive timeout, zstd frames) into a
  bounded inbox; a full inbox stops the socket being read (backpressure).
* ``overlap.Overlap`` is the resume window: the position written with every batch holds
  the cursor *and* the identities of the last few seconds of events, so after a
  reconnect, a failover or a ``kill -9`` the rewound overlap is dropped by identity.
* ``JetstreamSource`` (here) is what the ingester sees: batches of raw frames and the
  position just after them. Dedupe runs on the ingester's thread, so the position always
  describes exactly what the ingester took.

Cursors are ``time_us``; a cursor inside Jetstream's replay window (~24 h on v1 hosts)
resumes losslessly, an older one is clamped by the server to its oldest event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import zstandard

from skybuffer import metrics
from skybuffer.errors import ConfigError
from skybuffer.settings import JetstreamSettings
from skybuffer.sources.base import SourceBatch
from skybuffer.sources.inbox import Chunk, Disconnected, Inbox
from skybuffer.sources.overlap import Overlap
from skybuffer.sources.subscription import Subscription

log = logging.getLogger(__name__)

US = 1_000_000


def load_dictionary(path: Path | None) -> zstandard.ZstdCompressionDict:
    """Jetstream's zstd dictionary: the shipped one unless ``path`` names another."""
    if path is None:
        from skybuffer.buffer.codec import jetstream_dictionary

        return jetstream_dictionary()
    try:
        return zstandard.ZstdCompressionDict(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"jetstream.dictionary {path} cannot be read: {exc}") from None


class JetstreamSource:
    """Jetstream v1 as a Source: raw frames, the resume window as position.

    The Source protocol first; then the steps of ``batches``: start the reader, collect
    chunks from its inbox, admit their new frames, answer its reconnect markers."""

    name = "jetstream"

    def __init__(
        self,
        settings: JetstreamSettings | None = None,
        *,
        urls: list[str] | None = None,
        collections: list[str] | None = None,
        compress: bool | None = None,
        count: int | None = None,
    ) -> None:
        self.settings = settings or JetstreamSettings()
        s = self.settings
        self.urls = list(urls) if urls else list(s.urls)
        for url in self.urls:
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(f"jetstream URL {url!r} must start with ws:// or wss://")
        self.collections = list(s.collections if collections is None else collections)
        self.compress = s.compress if compress is None else compress
        self.count = count
        self._dctx = (
            zstandard.ZstdDecompressor(dict_data=load_dictionary(s.dictionary))
            if self.compress
            else None
        )
        self._overlap = Overlap(
            round(s.rewind_seconds * US), round(s.failover_guard_seconds * US), s.overlap_max_ids
        )
        self._inbox = Inbox(s.queue_events)
        self._reader: Subscription | None = None
        self._carry: Chunk | None = None
        self._closed = threading.Event()
        self._yielded = 0

    def resume(self, position: str | None) -> None:
        """Start from a position written by this source (None: the live tail); after
        ``close``, reconnect from it (a rewind)."""
        if self._reader is not None:
            self._reader.stop()
            self._reader, self._carry = None, None
            self._inbox = Inbox(self.settings.queue_events)
        self._closed.clear()
        self._overlap.restore(position)

    @property
    def position(self) -> str:
        return self._overlap.position()

    @property
    def held_back(self) -> bool:
        """Whether the reader waits for the ingester to take what it read: the socket is
        not read, and a server drops a client that stays like this (slow consumer)."""
        return self._reader is not None and self._reader.is_held_back()

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        """Batches of new events; an empty one after each quiet linger; ends on close/count."""
        if max_events < 1:
            raise ConfigError(f"max_events must be >= 1, got {max_events}")
        self._start_reader()
        while not self._closed.is_set() and not self._counted_out():
            events, rejects = self._collect(self._batch_size(max_events), linger_seconds)
            self._yielded += len(events) + len(rejects)
            if events:
                self._observe_lag()
            yield SourceBatch(events, self._overlap.position(), rejects)

    def close(self) -> None:
        """Safe from any thread (signal handlers too); the reader stops within a tick."""
        self._closed.set()
        if self._reader is not None:
            self._reader.stop()

    def _start_reader(self) -> None:
        if self._reader is not None:
            return
        self._reader = Subscription(
            self.settings,
            self._inbox,
            self._overlap.resume_point(),
            urls=self.urls,
            collections=self.collections,
            compress=self.compress,
            decompressor=self._dctx,
        )
        self._reader.start()

    def _collect(self, limit: int, linger: float) -> tuple[list[bytes], list[tuple[str, bytes]]]:
        """Admit up to ``limit`` new frames, waiting at most ``linger`` for them."""
        events: list[bytes] = []
        rejects: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + linger
        while len(events) + len(rejects) < limit and not self._closed.is_set():
            item = self._carry or self._inbox.take(max(0.0, deadline - time.monotonic()))
            self._carry = None
            if item is None:
                break
            if isinstance(item, Disconnected):
                self._answer(item)
                continue
            self._admit(item, limit - len(events) - len(rejects), events, rejects)
        return events, rejects

    def _admit(
        self, chunk: Chunk, room: int, events: list[bytes], rejects: list[tuple[str, bytes]]
    ) -> None:
        """Move up to ``room`` new frames of ``chunk`` into the batch; carry over the rest."""
        overlap, before = self._overlap, self._overlap.duplicates
        if chunk.events:
            overlap.host = chunk.host
        while chunk.rejects and room > 0:
            reason, raw = chunk.rejects.pop(0)
            if overlap.admit(raw):
                rejects.append((reason, raw))
                room -= 1
        frames, i, n = chunk.events, 0, len(chunk.events)
        while i < n and room > 0:
            raw = frames[i]
            i += 1
            if overlap.admit(raw):
                events.append(raw)
                room -= 1
        if overlap.duplicates > before:
            metrics.SOURCE_OVERLAP_DROPPED.inc(overlap.duplicates - before)
        if i < n or chunk.rejects:
            self._carry = Chunk(chunk.host, frames[i:], chunk.rejects)

    def _answer(self, marker: Disconnected) -> None:
        """The reader waits for this to reconnect from exactly what the ingester took."""
        assert self._reader is not None
        if marker.cause == "reader_failed":
            raise RuntimeError("the Jetstream reader thread failed; see the error logged above")
        self._reader.answer(self._overlap.resume_point())

    def _batch_size(self, max_events: int) -> int:
        if self.count is None:
            return max_events
        return min(max_events, self.count - self._yielded)

    def _counted_out(self) -> bool:
        return self.count is not None and self._yielded >= self.count

    def _observe_lag(self) -> None:
        if self._overlap.max_us is not None:
            metrics.SOURCE_LAG_SECONDS.set(max(0.0, time.time() - self._overlap.max_us / US))
