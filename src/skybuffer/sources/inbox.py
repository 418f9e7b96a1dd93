"""What the websocket reader thread hands the ingester thread: chunks of raw frames, a
marker when a connection ended, and the bounded FIFO between them (sources/subscription.py
says why it is bounded: a full inbox is backpressure on the socket)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Chunk:
    """Frames of one connection, in arrival order."""

    host: str
    """host_tag() of the URL they came from."""
    events: list[bytes] = field(default_factory=list)
    rejects: list[tuple[str, bytes]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.rejects)


@dataclass(slots=True)
class Disconnected:
    """A connection ended; the consumer answers with its ResumePoint."""

    cause: str
    detail: str


class Inbox:
    """A bounded FIFO of chunks between the reader thread and the ingester thread."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._items: deque[Chunk | Disconnected] = deque()
        self._events = 0
        self._cond = threading.Condition()

    def offer(self, item: Chunk | Disconnected) -> bool:
        """Add ``item`` unless full (a marker always fits); never blocks."""
        size = len(item) if isinstance(item, Chunk) else 0
        with self._cond:
            if size and self._events >= self.max_events:
                return False
            self._items.append(item)
            self._events += size
            self._cond.notify()
        return True

    def take(self, timeout: float) -> Chunk | Disconnected | None:
        """The oldest item, waiting up to ``timeout`` seconds; None if there is none."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            if isinstance(item, Chunk):
                self._events -= len(item)
            return item

    def __len__(self) -> int:
        return self._events
