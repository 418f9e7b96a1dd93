"""Replays a JSONL or JSONL.zst file of raw events, one event per line.

The position is the number of lines consumed, so a restarted ingest continues with the
next line after the last one Redis confirmed. Blank lines are skipped (and counted in the
position). A second ``batches`` continues after the last line the first one yielded.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from skybuffer.errors import ConfigError
from skybuffer.sources.base import SourceBatch


class ReplaySource:
    """Lines of a file as raw events, optionally paced."""

    name = "replay"

    def __init__(self, path: Path, rate: float = 0.0) -> None:
        if not path.is_file():
            raise ConfigError(f"replay file {path} does not exist")
        self.path = path
        self.rate = rate
        self._start_line = 0
        self._closed = threading.Event()

    def resume(self, position: str | None) -> None:
        self._closed.clear()  # a rewound source is read again
        if position is None:
            self._start_line = 0
            return
        try:
            self._start_line = int(position)
        except ValueError:
            raise ConfigError(
                f"replay cursor {position!r} is not a line number; was it written by another "
                "source? Delete the key skybuffer:cursor:replay to start over."
            ) from None

    def close(self) -> None:
        self._closed.set()

    def _open(self) -> BinaryIO:
        raw = open(self.path, "rb")  # noqa: SIM115 - closed by the caller's with
        if self.path.suffix == ".zst":
            reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
            return io.BufferedReader(reader)
        return raw

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        line_no = 0
        events: list[bytes] = []
        started = last_yield = time.monotonic()
        emitted = 0
        with self._open() as handle:
            for line in handle:
                line_no += 1
                if line_no <= self._start_line:
                    continue
                if self._closed.is_set():
                    line_no -= 1
                    break
                stripped = line.rstrip(b"\r\n")
                if stripped:
                    events.append(stripped)
                    emitted += 1
                now = time.monotonic()
                if len(events) >= max_events or (events and now - last_yield >= linger_seconds):
                    self._start_line = line_no
                    yield SourceBatch(events, str(line_no))
                    events, last_yield = [], now
                if self.rate:
                    self._pace(emitted, started)
        if events or line_no > self._start_line:
            self._start_line = line_no
            yield SourceBatch(events, str(line_no))

    def _pace(self, emitted: int, started: float) -> None:
        ahead = emitted / self.rate - (time.monotonic() - started)
        if ahead > 0:
            self._closed.wait(ahead)
