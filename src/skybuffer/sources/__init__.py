"""Event sources: each yields batches of raw Jetstream-shaped JSON events with a position."""

from skybuffer.sources.base import Source, SourceBatch

__all__ = ["Source", "SourceBatch"]
