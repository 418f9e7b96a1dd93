"""The ``--source synthetic`` adapter: the testbed's generated events as a paced source.

The events themselves (shapes, sizes, mix, determinism) are skybuffer.testbed.generator's;
this class paces them, counts them and resumes exactly from a position.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from skybuffer.errors import ConfigError
from skybuffer.sources.base import SourceBatch
from skybuffer.testbed.generator import CHUNK, DEFAULT_RATE
from skybuffer.testbed.generator import Factory as _Factory
from skybuffer.testbed.generator import step_us as _step_us

_MAX_NAP = 0.05  # longest sleep while pacing, so lingers and close() stay prompt


class SyntheticSource:
    """Paced, endless or counted synthetic events that resume exactly from a position."""

    name = "synthetic"

    def __init__(
        self,
        seed: int = 42,
        rate: float = DEFAULT_RATE,
        count: int | None = None,
        start_us: int | None = None,
    ) -> None:
        if rate < 0:
            raise ConfigError(f"synthetic rate must be >= 0 events/s (0 = unpaced), got {rate}")
        if count is not None and count < 0:
            raise ConfigError(f"synthetic count must be >= 0 or unset (endless), got {count}")
        self.seed, self.rate, self.count = seed, rate, count
        self._initial_start_us = start_us
        self._factory, self._step = _Factory(seed), _step_us(rate)
        self._start_us: int | None = None
        self._next = 0
        self._chunk: tuple[int, list[bytes]] = (-1, [])
        self._closing = False
        self._wake = threading.Event()

    @property
    def position(self) -> str:
        """Where the next event starts: ``seed:start_us:next_index`` (resolves start_us)."""
        if self._start_us is None:
            self.resume(None)
        return f"{self.seed}:{self._start_us}:{self._next}"

    def resume(self, position: str | None) -> None:
        """Continue after ``position``; None starts at event 0 (now, unless start_us was set).
        Also after ``close``: a rewound source is read again."""
        self._closing = False
        self._wake.clear()
        if position is None:
            start = self._initial_start_us
            self._start_us = start if start is not None else time.time_ns() // 10**9 * 10**6
            self._next, self._chunk = 0, (-1, [])
            return
        try:
            seed, start_us, next_index = (int(part) for part in position.split(":"))
        except ValueError:
            raise ConfigError(
                f"synthetic position {position!r} is not 'seed:start_us:next_index'"
            ) from None
        if seed != self.seed:
            raise ConfigError(
                f"synthetic position {position!r} was made with seed {seed}, not {self.seed}: "
                f"run with seed {seed}, or delete the cursor to start over"
            )
        self._start_us, self._next, self._chunk = start_us, next_index, (-1, [])

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        """Yield what the pace allows, at most ``max_events`` at a time, until done or closed.

        The pace counts from the first batch, so a consumer that stalls gets the backlog in
        full batches afterwards (like a Jetstream cursor replay), and the long-run average
        is the rate.
        """
        if max_events < 1:
            raise ConfigError(f"max_events must be >= 1, got {max_events}")
        if self._start_us is None:
            self.resume(None)
        began, sent = time.monotonic(), 0
        while not self._closing and self._remaining() > 0:
            due = self._wait_due(began, sent, max_events, linger_seconds)
            if self._closing:
                return
            events = self._take(min(due, max_events, self._remaining()))
            sent += len(events)
            yield SourceBatch(events=events, position=self.position)

    def close(self) -> None:
        """End the iteration at its next step; safe from a signal handler or another thread.

        A handler (always on the main thread) only sets a flag, which the pacing nap sees
        within 50 ms: Event.set there could deadlock on the lock an interrupted Event.wait
        holds. Another thread also wakes the nap at once.
        """
        self._closing = True
        if threading.current_thread() is not threading.main_thread():
            self._wake.set()

    def _remaining(self) -> int:
        return 1 << 62 if self.count is None else self.count - self._next

    def _wait_due(self, began: float, sent: int, max_events: int, linger: float) -> int:
        """Events the pace owes now, waiting until a full batch is due or the linger ends."""
        if self.rate <= 0:
            return max_events
        deadline = time.monotonic() + linger
        while True:
            now = time.monotonic()
            due = int((now - began) * self.rate) - sent
            if due >= max_events or now >= deadline or self._closing:
                return max(due, 0)
            self._wake.wait(min(_MAX_NAP, (max_events - due) / self.rate, deadline - now))

    def _take(self, n: int) -> list[bytes]:
        """The next ``n`` events, regenerating a chunk only when the index enters it."""
        assert self._start_us is not None
        out: list[bytes] = []
        while len(out) < n:
            index, offset = divmod(self._next, CHUNK)
            if self._chunk[0] != index:
                self._chunk = (index, self._factory.chunk(index, self._start_us, self._step))
            piece = self._chunk[1][offset : offset + n - len(out)]
            out += piece
            self._next += len(piece)
        return out
