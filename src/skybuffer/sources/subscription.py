"""The websocket side of the Jetstream source: one thread that keeps a subscription alive.

The ingester is synchronous, so the socket is read by an asyncio loop on a background
thread that hands chunks of raw frames to the ingester through a bounded ``Inbox``. When
the inbox is full the reader stops reading the socket: websockets then stops reading the
TCP stream, the kernel buffers fill and the server sees backpressure. Jetstream answers
a slow client by dropping it; that is survivable because of the resume protocol:

After any disconnect the reader posts a ``Disconnected`` marker behind the frames it has
read and waits. The ingester consumes everything in front of the marker, then answers
with its ``ResumePoint``, so the next connection starts from what the ingester *took*, and
the overlap is dropped by the consumer's window (sources/overlap.py). Nothing read is
lost, nothing is read twice into the buffer.

Where and when to reconnect is sources/reconnect.py's policy. Keepalive pings notice a
dead peer; a receive timeout notices a live peer that has stopped sending.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import zstandard
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from skybuffer import metrics
from skybuffer.events import Reason
from skybuffer.settings import JetstreamSettings
from skybuffer.sources.inbox import Chunk, Disconnected, Inbox
from skybuffer.sources.overlap import ResumePoint, host_tag
from skybuffer.sources.reconnect import Reconnects

log = logging.getLogger(__name__)

CHUNK_EVENTS = 256
"""Frames handed over at once: one thread switch per chunk, not per event."""
TICK_SECONDS = 0.01
"""How often a partial chunk is handed over, and stop and silence are checked."""
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Frames above this end the connection; the ingester dead-letters events above its own
max_event_bytes, so this only has to be larger than any real event."""
SLOW_WINDOW_SECONDS = 5.0
"""A disconnect this soon after the inbox was full is blamed on our slowness."""
REPLAY_WINDOW_SECONDS = 24 * 3600
"""How far back a v1 host replays (jetstream-legacy#58); older cursors are clamped."""


def subscribe_url(base: str, collections: list[str], cursor: int | None, compress: bool) -> str:
    """The v1 /subscribe URL: wantedCollections (repeated), cursor (time_us), compress."""
    parts = urlsplit(base)
    query = parse_qsl(parts.query)
    query += [("wantedCollections", c) for c in collections]
    if cursor is not None:
        query.append(("cursor", str(cursor)))
    if compress:
        query.append(("compress", "true"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def describe_cursor(cursor: int | None) -> str:
    if cursor is None:
        return "none (live tail)"
    when = datetime.fromtimestamp(cursor / 1e6, UTC).isoformat(timespec="milliseconds")
    return f"{cursor} ({when})"


class Subscription:
    """Reads Jetstream into ``inbox`` until ``stop``; reconnects and fails over by itself.

    The consumer thread calls the public methods; everything else runs on the reader's
    own loop: a session per connection, frames pumped into chunks, chunks handed over."""

    def __init__(
        self,
        settings: JetstreamSettings,
        inbox: Inbox,
        start: ResumePoint,
        *,
        urls: list[str],
        collections: list[str],
        compress: bool,
        decompressor: zstandard.ZstdDecompressor | None,
    ) -> None:
        self._thread = threading.Thread(target=self.run, name="jetstream-reader", daemon=True)
        self.settings = settings
        self.inbox = inbox
        self.collections = collections
        self.compress = compress
        self._dctx = decompressor
        self._point = start
        self._answered = threading.Event()
        self._answered.set()
        self._stop = threading.Event()
        self._reconnects = Reconnects(settings, urls)
        self.connections = 0
        # Per connection, touched by the loop thread only:
        self._pending = Chunk("")
        self._last_recv = 0.0
        self._blocked_at = -1e9
        self._waiting = False
        self._delivered = False

    def answer(self, point: ResumePoint) -> None:
        """The consumer has taken everything before the last marker: resume from ``point``."""
        self._point = point
        self._answered.set()

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def is_held_back(self) -> bool:
        """Whether the reader waits for room in the inbox (and so does not read the socket)."""
        return self._waiting

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # the ingester must not hang on a dead reader: say so loudly
            log.exception("The Jetstream reader thread failed; the source stops.")
            self.inbox.offer(Disconnected("reader_failed", "see the log"))
        finally:
            metrics.SOURCE_CONNECTED.set(0)

    async def _main(self) -> None:
        while not self._stop.is_set():
            if not await self._wait_answer():
                return
            url = self._reconnects.url
            cursor = self._point.cursor(url)
            try:
                cause, detail, delivered = await self._session(url, cursor)
            except Exception as exc:  # unexpected: log it, and retry like any failure
                log.exception("Jetstream connection to %s failed unexpectedly.", url)
                cause, detail, delivered = "error", _brief(exc), False
            if cause == "stopped":
                return
            self._reconnects.ended(url, cause, detail, delivered)
            self._answered.clear()
            self.inbox.offer(Disconnected(cause, detail))
            await self._sleep(self._reconnects.delay(delivered))

    async def _wait_answer(self) -> bool:
        """Wait for the consumer's ResumePoint; False when stopped first."""
        while not self._answered.is_set():
            if self._stop.is_set():
                return False
            await asyncio.sleep(TICK_SECONDS)
        return not self._stop.is_set()

    async def _session(self, url: str, cursor: int | None) -> tuple[str, str, bool]:
        """One connection, until it ends: (cause, detail, whether it delivered anything)."""
        full = subscribe_url(url, self.collections, cursor, self.compress)
        s = self.settings
        try:
            ws = await connect(
                full,
                compression=None,
                max_size=MAX_MESSAGE_BYTES,
                max_queue=1024,
                open_timeout=s.open_timeout_seconds,
                ping_interval=s.ping_interval_seconds,
                ping_timeout=s.ping_timeout_seconds,
                close_timeout=1,
                proxy=_proxy(url),
                user_agent_header="skybuffer",
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if isinstance(exc, socket.gaierror):
                self._hint_offline(url)
            return "connect_failed", _brief(exc), False
        self.connections += 1
        metrics.SOURCE_CONNECTED.set(1)
        log.info("Jetstream connected to %s, cursor %s.", url, describe_cursor(cursor))
        too_old = cursor is not None and time.time() - cursor / 1e6 > REPLAY_WINDOW_SECONDS
        if too_old and not _loopback(url):  # a local replay server keeps everything
            log.warning(
                "The cursor is older than Jetstream's replay window (~24 h): the server "
                "starts at its oldest event, and events before that are not in the buffer."
            )
        self._pending = Chunk(host_tag(url))
        self._last_recv = time.monotonic()
        try:
            return await self._read_until_closed(ws)
        finally:
            metrics.SOURCE_CONNECTED.set(0)
            await ws.close()

    def _hint_offline(self, url: str) -> None:
        """Once: a host name that does not resolve usually means no network at all."""
        if getattr(self, "_offline_hinted", False):
            return
        self._offline_hinted = True
        log.error(
            "Cannot resolve %s: is this machine offline? Without a network, ingest from "
            "`--source synthetic`, or serve a capture with `skybuffer replay-server --file F` "
            "and pass `--url ws://127.0.0.1:6008/subscribe`. Retrying meanwhile.",
            url,
        )

    async def _read_until_closed(self, ws: ClientConnection) -> tuple[str, str, bool]:
        pump = asyncio.ensure_future(self._pump(ws))
        watch = asyncio.ensure_future(self._watch(ws))
        done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, watch):
            task.cancel()
        await asyncio.gather(pump, watch, return_exceptions=True)
        first = pump if pump in done else watch
        cause, detail = first.result() if not first.cancelled() else ("stopped", "")
        cause = self._blame(cause)
        await self._hand_over_rest()
        return cause, detail, self._delivered

    async def _pump(self, ws: ClientConnection) -> tuple[str, str]:
        """Receive frames into the pending chunk; wait for room when the inbox is full."""
        self._delivered = False
        received = 0
        try:
            while True:
                frame = await ws.recv(decode=False)
                self._last_recv = time.monotonic()
                self._delivered = True
                received += len(frame)
                self._add(frame)
                if len(self._pending) >= CHUNK_EVENTS:
                    metrics.SOURCE_BYTES.inc(received)
                    received = 0
                    await self._hand_over()
        except ConnectionClosed as exc:
            metrics.SOURCE_BYTES.inc(received)
            code = exc.rcvd.code if exc.rcvd else exc.sent.code if exc.sent else 1006
            reason = exc.rcvd.reason if exc.rcvd else exc.sent.reason if exc.sent else ""
            if exc.sent and "keepalive" in exc.sent.reason:
                return "keepalive_timeout", f"no pong within {self.settings.ping_timeout_seconds}s"
            if code in (1000, 1001):
                return "server_closed", f"close code {code} {reason}".strip()
            return "network_error", f"close code {code} {reason}".strip()

    def _add(self, frame: bytes) -> None:
        if self._dctx is not None and frame[:4] == b"\x28\xb5\x2f\xfd":  # a zstd frame
            try:
                frame = self._dctx.decompress(frame, max_output_size=MAX_MESSAGE_BYTES)
            except zstandard.ZstdError:
                self._pending.rejects.append((str(Reason.BAD_FRAME), frame))
                return
        elif self.compress and not frame.lstrip()[:1] == b"{":
            self._pending.rejects.append((str(Reason.BAD_FRAME), frame))
            return
        self._pending.events.append(frame)

    async def _watch(self, ws: ClientConnection) -> tuple[str, str]:
        """Hand over partial chunks; end the connection on stop or on silence."""
        limit = self.settings.receive_timeout_seconds
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if self._stop.is_set():
                return "stopped", ""
            self._try_hand_over()
            if not self._waiting and time.monotonic() - self._last_recv > limit:
                return "silent", f"no message for {limit:g}s"

    def _blame(self, cause: str) -> str:
        """A drop while (or just after) the inbox was full is our slowness, whatever the code."""
        slow = time.monotonic() - self._blocked_at < SLOW_WINDOW_SECONDS
        if cause in ("network_error", "keepalive_timeout", "server_closed") and slow:
            return "slow_consumer"
        return cause

    def _try_hand_over(self) -> bool:
        if not len(self._pending):
            return True
        if self.inbox.offer(self._pending):
            self._pending = Chunk(self._pending.host)
            return True
        return False

    async def _hand_over(self) -> None:
        """Wait (without reading the socket) until the inbox takes the pending chunk."""
        if self._try_hand_over():
            return
        self._waiting = True
        try:
            while not self._try_hand_over():
                self._blocked_at = time.monotonic()
                if self._stop.is_set():
                    return
                await asyncio.sleep(TICK_SECONDS)
        finally:
            self._waiting = False
            self._last_recv = time.monotonic()

    async def _hand_over_rest(self) -> None:
        if not self._stop.is_set():
            await self._hand_over()

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(TICK_SECONDS * 5, deadline - time.monotonic()))


def _loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _proxy(url: str) -> Literal[True] | None:
    """Loopback never goes through an HTTP proxy from the environment."""
    return None if _loopback(url) else True


def _brief(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"[:200]
