"""Writes encoded batches into the streams, atomically with the source position.

One Redis transaction (MULTI/EXEC) per batch holds: one XADD per type, the per-type
event counters, the dead letters, and the cursor (source position + batch sequence
number). So the buffer and the cursor never disagree: a restart resumes exactly where
the buffer ends. A batch whose EXEC outcome is unknown (the connection broke) is not
written again if the cursor's sequence number shows it landed: no duplicates.

Every key of a transaction shares one prefix (Redis Cluster-ready, see constants.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from skybuffer.buffer.codec import Codec
from skybuffer.constants import DL_DETAIL, DL_RAW, DL_REASON, DL_SOURCE, TYPES, Keys
from skybuffer.errors import BufferFull, RedisUnavailable
from skybuffer.events import InvalidEvent, Reason, classify

# Redis errors that mean "not reachable right now" rather than "refused".
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


@dataclass(slots=True)
class DeadLetter:
    reason: str
    raw: bytes
    detail: str = ""


@dataclass(slots=True)
class Batch:
    """Encoded events of one source batch, ready for one transaction."""

    seq: int
    position: str
    entries: dict[str, dict[bytes, bytes]]
    counts: dict[str, int]
    deadletters: list[DeadLetter] = field(default_factory=list)
    raw_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    attempted: bool = False
    """True once an EXEC was sent whose outcome is unknown."""

    @property
    def events(self) -> int:
        return sum(self.counts.values()) + len(self.deadletters)


@dataclass(frozen=True)
class Checkpoint:
    position: str | None
    seq: int


@dataclass(slots=True)
class Classified:
    """Raw events of one source batch, sorted by type; bad ones as dead letters."""

    position: str
    by_type: dict[str, list[bytes]]
    deadletters: list[DeadLetter]
    raw_bytes: int

    @property
    def empty(self) -> bool:
        return not self.deadletters and not any(self.by_type.values())


class Encoder:
    """Classifies raw events, then packs each type into one compressed entry.

    The two steps are separate so the ingester can classify the next batch (Python
    work) while the previous one is compressed and written (zstd and socket I/O release
    the GIL).
    """

    def __init__(self, max_event_bytes: int, level: int = Codec.default_level) -> None:
        self.max_event_bytes = max_event_bytes
        self.codec = Codec(level)

    def classify(
        self, position: str, events: Iterable[bytes], rejects: Iterable[tuple[str, bytes]] = ()
    ) -> Classified:
        by_type: dict[str, list[bytes]] = {t: [] for t in TYPES}
        limit = self.max_event_bytes
        dead = [DeadLetter(reason, raw[:limit]) for reason, raw in rejects]
        raw_bytes = 0
        for raw in events:
            try:
                by_type[classify(raw, limit)].append(raw)
                raw_bytes += len(raw)
            except InvalidEvent as exc:
                dead.append(DeadLetter(exc.reason, raw[:limit], exc.detail))
        return Classified(position, by_type, dead, raw_bytes)

    def pack(self, seq: int, classified: Classified) -> Batch:
        by_type = classified.by_type
        entries = {t: self.codec.encode(evs) for t, evs in by_type.items() if evs}
        counts = {t: len(evs) for t, evs in by_type.items() if evs}
        return Batch(
            seq, classified.position, entries, counts, classified.deadletters, classified.raw_bytes
        )

    def encode(
        self,
        seq: int,
        position: str,
        events: Iterable[bytes],
        rejects: Iterable[tuple[str, bytes]] = (),
    ) -> Batch:
        return self.pack(seq, self.classify(position, events, rejects))


class Producer:
    """Appends batches to the streams of one key prefix, for one named source."""

    def __init__(self, client: redis.Redis, keys: Keys, source: str) -> None:
        self.client = client
        self.keys = keys
        self.source = source
        self.cursor_key = keys.cursor(source)

    def checkpoint(self) -> Checkpoint:
        """The source position and batch sequence number of the last batch that landed."""
        try:
            raw = self.client.hgetall(self.cursor_key)
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"cannot read the cursor: {exc}") from exc
        position = raw.get(b"position")
        seq = int(raw.get(b"seq", 0))
        return Checkpoint(position.decode() if isinstance(position, bytes) else None, seq)

    def write(self, batch: Batch) -> bool:
        """Make ``batch`` durable in Redis; False if an earlier attempt had landed it."""
        if batch.attempted and self.checkpoint().seq >= batch.seq:
            return False
        pipe = self.client.pipeline(transaction=True)
        for type_, fields in batch.entries.items():
            pipe.xadd(self.keys.stream(type_), fields)  # type: ignore[arg-type]
            pipe.hincrby(self.keys.event_counts, type_, batch.counts[type_])
        for dead in batch.deadletters:
            pipe.xadd(self.keys.deadletter, _deadletter_fields(dead, self.source))  # type: ignore[arg-type]
        pipe.hset(self.cursor_key, mapping={"position": batch.position, "seq": batch.seq})
        self._execute(pipe, batch)
        return True

    def _execute(self, pipe: redis.client.Pipeline, batch: Batch) -> None:
        try:
            pipe.execute()
        except CONNECTION_ERRORS as exc:
            batch.attempted = True  # EXEC may or may not have run
            raise RedisUnavailable(str(exc)) from exc
        except redis.exceptions.OutOfMemoryError as exc:
            # XADD is refused at queue time, so EXEC aborts the whole transaction
            # (EXECABORT): nothing of the batch was applied; it is retried as a whole.
            raise BufferFull(str(exc)) from exc
        except redis.ResponseError as exc:
            if "OOM" in str(exc) or "EXECABORT" in str(exc):
                raise BufferFull(str(exc)) from exc
            raise

    def memory_fraction(self) -> float:
        """used_memory / maxmemory (0.0 when Redis has no limit)."""
        try:
            info = self.client.info("memory")
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(str(exc)) from exc
        maxmemory = int(info.get("maxmemory", 0))
        return int(info["used_memory"]) / maxmemory if maxmemory else 0.0


def _deadletter_fields(dead: DeadLetter, source: str) -> dict[bytes, bytes]:
    return {
        DL_REASON: str(dead.reason).encode(),
        DL_SOURCE: source.encode(),
        DL_RAW: dead.raw,
        DL_DETAIL: dead.detail.encode(),
    }


__all__ = ["Batch", "Checkpoint", "Classified", "DeadLetter", "Encoder", "Producer", "Reason"]
