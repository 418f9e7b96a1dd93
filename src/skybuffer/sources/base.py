"""The shape every source has.

A source yields ``SourceBatch`` objects: raw event bytes (exactly as received, not yet
parsed) and the *position* just after the batch. The ingester writes the position in the
same Redis transaction as the batch, and on restart hands it back to ``resume`` so the
source continues exactly where the buffer ends. Positions are opaque strings to
everything but their source.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class SourceBatch:
    """Raw events and the source position just after the last of them."""

    events: list[bytes]
    position: str
    # Events the source could not even frame (e.g. an undecodable websocket frame):
    # (reason, raw bytes) pairs that go straight to the dead-letter stream.
    rejects: list[tuple[str, bytes]] = field(default_factory=list)


class Source(Protocol):
    """A stream of raw events that can resume from a position."""

    name: str
    """Names the cursor key (skybuffer:cursor:{name})."""

    def resume(self, position: str | None) -> None:
        """Start after ``position`` (None: from the beginning / live)."""

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        """Yield batches of at most ``max_events``; a partial batch after ``linger_seconds``.

        Ends when the source is exhausted (a counted or file source) or ``close`` is called.
        A batch may be empty (a linger expired with nothing to say) so that callers can
        check their stop flag regularly. A second call (no ``resume`` between) continues
        after the last batch the first one yielded: near the end of a ``--count`` the
        ingester asks again for smaller batches (pipeline/prefetch.py).
        """
        ...

    def close(self) -> None:
        """Stop yielding; release sockets and files."""
