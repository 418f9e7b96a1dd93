"""A local Jetstream: serves a JSONL(.zst) file over the v1 /subscribe protocol.

Tests, demos and benchmarks need a real WebSocket peer that behaves like Jetstream where
it matters to a client, without the network:

* ``cursor``: events with ``time_us >= cursor``, in file order (so a file's out-of-order
  events stay out of order, as on the real service); no cursor starts at the first event.
* ``wantedCollections`` (repeatable, ``prefix.*`` allowed) filters commits only; identity
  and account events, and lines that are not JSON, are always sent.
* ``compress=true``: each event its own zstd frame with Jetstream's dictionary, binary.
* Pace: ``rate`` events/s per connection, through an outbox of ``outbox`` messages; a
  client that does not read while the outbox fills is dropped, as Jetstream does. Rate 0
  sends as fast as the client reads and never drops anyone on its own.
* ``drop_clients()`` (SIGUSR1 for `skybuffer replay-server`) drops every subscriber the
  same way at once: a slow-consumer drop on command, for tests that must not depend on
  how fast this machine fills an outbox.
* After the last event the connection stays open and quiet, like a live tail; ``loop``
  starts over instead, with time_us shifted past the previous pass, and revs (commits)
  and seqs (identity, account) shifted too, so every event of every pass is unique.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import zstandard
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from skybuffer.errors import ConfigError
from skybuffer.testbed.event_file import EventFile, ReplayRequest, frames

log = logging.getLogger(__name__)

DEFAULT_OUTBOX = 10_000
SLOW_CLOSE = (1008, "consumer too slow")
YIELD_EVERY = 64


@dataclass
class ServerStats:
    connections: int = 0
    slow_disconnects: int = 0
    sent: int = 0
    cursors: deque[int | None] = field(default_factory=lambda: deque(maxlen=100))
    """The cursor of each recent connection (None: from the start)."""


class ReplayServer:
    """Serves one file to any number of subscribers on ws://host:port/subscribe."""

    def __init__(
        self,
        source: EventFile,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float = 0.0,
        loop: bool = False,
        outbox: int = DEFAULT_OUTBOX,
    ) -> None:
        if rate < 0 or outbox < 1:
            raise ConfigError("replay-server needs --rate >= 0 and --outbox >= 1")
        self.source, self.host, self.port = source, host, port
        self.rate, self.loop, self.outbox = rate, loop, outbox
        self.stats = ServerStats()
        self._server: Server | None = None
        self._clients: set[ServerConnection] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._compressor: zstandard.ZstdCompressor | None = None
        self._zstd_frames: dict[int, bytes] = {}

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/subscribe"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            max_size=2**20,
            process_request=_only_subscribe,
            close_timeout=1,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        try:
            sub = ReplayRequest.from_path(ws.request.path)
        except ValueError as exc:
            await ws.close(1008, str(exc)[:120])
            return
        self.stats.connections += 1
        self.stats.cursors.append(sub.cursor)
        self._clients.add(ws)
        selected = frames(self.source, sub, self.loop)
        if sub.compress:
            out = (self._compressed(index, passes, raw) for index, passes, raw in selected)
        else:
            out = (raw for _, _, raw in selected)
        try:
            if self.rate:
                await self._paced(ws, out, text=not sub.compress)
            else:
                await self._unpaced(ws, out, text=not sub.compress)
            await ws.wait_closed()  # the quiet live tail
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(ws)

    async def drop_clients(self) -> int:
        """Drop every subscriber now, as a slow one is dropped; how many. Returns at once:
        the close waits for the client to read up to it, and a slow client is not reading."""
        dropped = list(self._clients)
        for ws in dropped:
            self._clients.discard(ws)
            self.stats.slow_disconnects += 1
            task = asyncio.ensure_future(ws.close(*SLOW_CLOSE))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("Replay server drops %d client(s) as slow, on command.", len(dropped))
        return len(dropped)

    async def _unpaced(self, ws: ServerConnection, out: Iterator[bytes], *, text: bool) -> None:
        """As fast as the client reads: send() waits only when the socket is full, so yield
        now and then, or a fast client would starve every other connection (and pings)."""
        for sent, frame in enumerate(out, 1):
            await ws.send(frame, text=text)
            self.stats.sent += 1
            if sent % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _compressed(self, index: int, passes: int, raw: bytes) -> bytes:
        """Like Jetstream, compress each event once, whoever subscribes (first pass)."""
        if passes:
            return self._compress(raw)
        frame = self._zstd_frames.get(index)
        if frame is None:
            frame = self._zstd_frames[index] = self._compress(raw)
        return frame

    def _compress(self, raw: bytes) -> bytes:
        if self._compressor is None:
            from skybuffer.buffer.codec import jetstream_dictionary

            self._compressor = zstandard.ZstdCompressor(dict_data=jetstream_dictionary())
        return self._compressor.compress(raw)

    async def _paced(self, ws: ServerConnection, out: Iterator[bytes], *, text: bool) -> None:
        """Produce at ``rate`` into the outbox; drop the client when the outbox is full."""
        outbox: asyncio.Queue[bytes] = asyncio.Queue(self.outbox)
        sender = asyncio.ensure_future(self._send_all(ws, outbox, text))
        began, made = time.monotonic(), 0
        try:
            while not sender.done():
                due = int((time.monotonic() - began) * self.rate) - made
                if due <= 0:
                    wait = (made + 1) / self.rate - (time.monotonic() - began)
                    await asyncio.sleep(max(0.001, wait))
                    continue
                burst = [frame for _, frame in zip(range(due), out, strict=False)]
                made += len(burst)
                if not _enqueue(outbox, burst):
                    await self._drop_slow(ws)
                    return
                if len(burst) < due:  # the file is done: let the sender empty the outbox
                    emptied = asyncio.ensure_future(outbox.join())
                    await asyncio.wait({emptied, sender}, return_when=asyncio.FIRST_COMPLETED)
                    emptied.cancel()
                    return
                await asyncio.sleep(0)
        finally:
            sender.cancel()

    async def _drop_slow(self, ws: ServerConnection) -> None:
        self.stats.slow_disconnects += 1
        log.info("Replay server drops a slow client (outbox of %d full).", self.outbox)
        await ws.close(SLOW_CLOSE[0], f"{SLOW_CLOSE[1]}: outbox full")

    async def _send_all(
        self, ws: ServerConnection, outbox: asyncio.Queue[bytes], text: bool
    ) -> None:
        while True:
            frame = await outbox.get()
            await ws.send(frame, text=text)
            self.stats.sent += 1
            outbox.task_done()


def _enqueue(outbox: asyncio.Queue[bytes], frames: list[bytes]) -> bool:
    """Put every frame in the outbox; False as soon as it is full (the client is slow)."""
    for frame in frames:
        try:
            outbox.put_nowait(frame)
        except asyncio.QueueFull:
            return False
    return True


def _only_subscribe(ws: ServerConnection, request: Request) -> Response | None:
    if urlsplit(request.path).path.rstrip("/") == "/subscribe":
        return None
    return Response(HTTPStatus.NOT_FOUND, "Not Found", Headers(), b"only /subscribe here\n")


class ServerThread:
    """A ReplayServer on its own event loop thread (for tests): ``stop()`` ends it."""

    def __init__(self, server: ReplayServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._done: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name="replay-server", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the replay server did not start within 10 s")
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def drop_clients(self, timeout: float = 10.0) -> int:
        """``ReplayServer.drop_clients`` from the calling thread."""
        dropping = asyncio.run_coroutine_threadsafe(self.server.drop_clients(), self._loop)
        return dropping.result(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._done = self._loop.create_future()
        self._loop.run_until_complete(self.server.start())
        self._ready.set()
        self._loop.run_until_complete(self._done)
        self._loop.run_until_complete(self.server.close())
        self._loop.close()

    def stop(self) -> None:
        if self._done is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._done.set_result, None)
            self._thread.join(10)


def run_replay_server(
    file: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 6008,
    rate: float = 0.0,
    loop: bool = False,
    outbox: int = DEFAULT_OUTBOX,
    announce: bool = True,
) -> None:
    """Serve ``file`` in the foreground until SIGINT/SIGTERM (`skybuffer replay-server`);
    SIGUSR1 drops every subscriber as a slow consumer."""
    source = EventFile.load(file)
    server = ReplayServer(source, host=host, port=port, rate=rate, loop=loop, outbox=outbox)

    async def main() -> None:
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR1, lambda: asyncio.ensure_future(server.drop_clients())
        )
        await server.start()
        if announce:
            pace = f"{rate:g} events/s" if rate else "unpaced"
            print(
                f"replay-server: {len(source.events):,} events from {file} on {server.url} "
                f"({pace}, loop {loop}); Ctrl-C stops it.",
                flush=True,
            )
        try:
            await stop
        except asyncio.CancelledError:
            pass
        await server.close()

    asyncio.run(main())
