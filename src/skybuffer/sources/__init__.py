"""Event sources: each yields batches of raw Jetstream-shaped JSON events with a position."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from skybuffer.errors import ConfigError
from skybuffer.sources.base import Source, SourceBatch

if TYPE_CHECKING:
    from skybuffer.settings import JetstreamSettings

SOURCE_KINDS = ("jetstream", "synthetic", "replay")

__all__ = ["SOURCE_KINDS", "Source", "SourceBatch", "open_source"]


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
) -> Source:
    """Build the source a command asked for; a bad combination gets one clear message.

    The source is endless (or ends with its file): a command's ``--count`` is N more
    valid events for the run, which the ingester enforces (pipeline/prefetch.py)."""
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

        return SyntheticSource(seed=seed, rate=rate)
    if kind == "replay":
        if file is None:
            raise ConfigError("--source replay needs --file PATH (a .jsonl or .jsonl.zst file)")
        from skybuffer.sources.replay import ReplaySource

        return ReplaySource(file, rate=rate)
    raise ConfigError(f"unknown source {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
