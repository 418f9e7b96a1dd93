"""Event sources: each yields batches of raw Jetstream-shaped JSON events with a position."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from skybuffer.errors import ConfigError
from skybuffer.sources.base import Source, SourceBatch

if TYPE_CHECKING:
    from skybuffer.settings import JetstreamSettings

SOURCE_KINDS = ("jetstream", "synthetic", "replay")

__all__ = ["SOURCE_KINDS", "Source", "SourceBatch", "check_source", "open_source"]


def check_source(kind: str, file: Path | None) -> None:
    """ConfigError for a source that cannot be opened as asked, before anything starts."""
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown source {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
    if kind == "replay" and file is None:
        raise ConfigError("--source replay needs --file PATH (a .jsonl or .jsonl.zst file)")
    if kind == "replay" and file is not None and not file.is_file():
        raise ConfigError(f"--file {file} does not exist (a .jsonl or .jsonl.zst file)")


def open_source(
    kind: str,
    *,
    rate: float,
    seed: int = 42,
    file: Path | None = None,
    url: str | None = None,
    urls: list[str] | None = None,
    collections: list[str] | None = None,
    compress: bool | None = None,
    jetstream: JetstreamSettings | None = None,
    count: int | None = None,
) -> Source:
    """Build the source a command asked for; a bad combination gets one clear message.

    The source is endless (or ends with its file): a command's ``--count`` is N more
    valid events for the run, which the ingester enforces (pipeline/prefetch.py).
    ``count`` here ends a synthetic or replay source after that many events (the lanes of
    a partitioned ingest count source events: pipeline/lanes.py)."""
    check_source(kind, file)
    if kind == "jetstream":
        from skybuffer.sources.jetstream import JetstreamSource

        return JetstreamSource(
            jetstream,
            urls=[url] if url else urls,
            collections=collections,
            compress=compress,
        )
    if kind == "synthetic":
        from skybuffer.sources.synthetic import SyntheticSource

        return SyntheticSource(seed=seed, rate=rate, count=count)
    from skybuffer.sources.replay import ReplaySource

    assert file is not None  # check_source
    return ReplaySource(file, rate=rate)
