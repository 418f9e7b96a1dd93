"""The harness every benchmark and chaos experiment shares, one function for each thing.

- A throw-away redis-server (``scratch_redis``), leaving nothing behind: started from the
  committed redis.conf (so figures describe the shipped profile) in a temporary directory
  on a free loopback port, stopped by SHUTDOWN / its pid, and the directory removed.
  ``conf_variant`` changes directives in a copy; ``delete_keys`` removes scratch keys.
- ``START_US``: the event time every tool's synthetic events start at.
- ``machine``: what ran the figures (Python, platform, CPUs), as every report prints it.
- ``Checksum`` / ``ChecksumSource``: an order-free digest of what was offered and what
  came back, so "nothing lost, nothing doubled" is a comparison of two values.
- ``stream_entries``: reading a whole stream back a page at a time.
- ``pyplot`` / ``save_plot``: matplotlib on the Agg backend, and the one way a figure is
  written (tight layout, 110 dpi, closed so a long run does not keep figures).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import redis

from skybuffer.buffer.server import ManagedRedis
from skybuffer.datadir import free_port
from skybuffer.settings import RedisSettings
from skybuffer.sources.base import Source, SourceBatch

START_US = 1_779_719_009_000_000
"""2026-05-25 14:23 UTC, the golden capture's hour: where the tools' synthetic events start."""
PLOT_DPI = 110


@contextmanager
def scratch_redis(
    base: RedisSettings, *, config: Mapping[str, str] | None = None, **overrides: object
) -> Iterator[ManagedRedis]:
    """A managed redis-server of the shipped profile on a free port, removed afterwards.

    ``config`` overrides redis.conf directives (e.g. ``{"appendfsync": "always"}``) in a
    copy of the conf, so they hold across a restart of the same server too.
    """
    directory = Path(tempfile.mkdtemp(prefix="skybuffer-scratch-"))
    if config:
        overrides["conf"] = conf_variant(base.conf, directory / "conf", config)
    settings = base.model_copy(update={"url": None, "port": free_port(), **overrides})
    server = ManagedRedis(settings, directory / "redis")
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop(timeout=30)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def conf_variant(conf: Path, directory: Path, config: Mapping[str, str]) -> Path:
    """A copy of ``conf`` (with the users.acl beside it) ending in ``config``'s directives:
    in redis.conf a later line wins, so the shipped file stays the single base."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [conf.read_text(), "# --- scratch overrides (later lines win) ---"]
    lines += [f"{name} {value}" for name, value in config.items()]
    target = directory / "redis.conf"
    target.write_text("\n".join(lines) + "\n")
    shutil.copyfile(conf.parent / "users.acl", directory / "users.acl")
    return target


def delete_keys(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN, never KEYS); returns how many went.

    The operations toolkit keeps its scratch keys under ``{prefix}ops:`` and calls this
    when it ends, so the pipeline's own keys are never touched."""
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    deleted, batch = 0, []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    return deleted


def machine() -> dict[str, Any]:
    """What ran the figures: a benchmark's numbers mean little without it."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def machine_line() -> str:
    """``machine()`` in one line, as a report's header names it."""
    m = machine()
    return f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}"


class Checksum:
    """Order-free digest of a multiset of events: count and sum of 64-bit hashes."""

    def __init__(self, keep_distinct: bool = False) -> None:
        self.count = 0
        self.total = 0
        self.keep_distinct = keep_distinct
        self.distinct: set[int] = set()
        """With ``keep_distinct``, the digests seen: events counted once however often
        they came (a rewound source hands some on again). ~60 B per event."""

    def add(self, event: bytes) -> None:
        digest = int.from_bytes(hashlib.blake2b(event, digest_size=8).digest(), "little")
        self.total = (self.total + digest) % (1 << 64)
        self.count += 1
        if self.keep_distinct:
            self.distinct.add(digest)

    def hexdigest(self) -> str:
        return f"{self.count}:{self.total:016x}"


class ChecksumSource:
    """A source that digests every event it hands on: what was offered to the ingester."""

    def __init__(self, inner: Source, checksum: Checksum) -> None:
        self.inner, self.checksum = inner, checksum
        self.name = inner.name

    def resume(self, position: str | None) -> None:
        self.inner.resume(position)

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        for batch in self.inner.batches(max_events, linger_seconds):
            for event in batch.events:
                self.checksum.add(event)
            yield batch

    def close(self) -> None:
        self.inner.close()


def stream_entries(
    client: redis.Redis, stream: str, page: int = 20
) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """Every entry of a stream, oldest first, a page at a time (bounded memory)."""
    cursor = "-"
    while True:
        reply = client.xrange(stream, min=cursor, count=page)
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], reply)
        if not entries:
            return
        for entry_id, fields in entries:
            yield entry_id.decode(), fields
        cursor = "(" + entries[-1][0].decode()


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed), imported lazily."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig: Any, path: Path) -> None:
    """Write a finished figure as a PNG and free it: every tool's plot ends here."""
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    pyplot().close(fig)
