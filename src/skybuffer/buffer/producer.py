"""Writes encoded batches into the streams, atomically with the source position.

One atomic script per batch holds: one XADD per type, the per-type event counters, the
dead letters, and the cursor (source position + batch sequence number + events total).
So the buffer and the cursor never disagree: a restart resumes exactly where the buffer
ends. A batch whose outcome is unknown (the connection broke) is not written again if
the cursor's sequence number shows it landed: no duplicates.

Every key of a transaction shares one prefix (Redis Cluster-ready, see constants.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from skybuffer import metrics
from skybuffer.buffer.codec import ADD_ENTRIES_LUA, Codec
from skybuffer.buffer.deadletter import ADD_LETTER_LUA, LETTER_FIELDS, DeadLetter
from skybuffer.buffer.lease import CONNECTION_ERRORS, FENCE_LUA, Lease
from skybuffer.constants import CURSOR_EVENTS, CURSOR_POSITION, CURSOR_SEQ, TYPES, Keys
from skybuffer.errors import (
    BufferForgot,
    BufferFull,
    LeaseLost,
    RedisUnavailable,
    persist_error,
)
from skybuffer.events import InvalidEvent, Reason, classify


@dataclass(slots=True)
class EncodedBatch:
    """Encoded events of one source batch, ready for one transaction."""

    seq: int
    position: str
    entries: dict[str, dict[bytes, bytes]]
    counts: dict[str, int]
    deadletters: list[DeadLetter] = field(default_factory=list)
    raw_bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def events(self) -> int:
        return sum(self.counts.values()) + len(self.deadletters)


@dataclass(frozen=True)
class Checkpoint:
    """The durable cursor: source position, batch number, events ever confirmed."""

    position: str | None
    seq: int
    events: int = 0


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

    def pack(self, seq: int, classified: Classified) -> EncodedBatch:
        by_type = classified.by_type
        entries = {t: self.codec.encode(evs) for t, evs in by_type.items() if evs}
        counts = {t: len(evs) for t, evs in by_type.items() if evs}
        return EncodedBatch(
            seq, classified.position, entries, counts, classified.deadletters, classified.raw_bytes
        )

    def encode(
        self,
        seq: int,
        position: str,
        events: Iterable[bytes],
        rejects: Iterable[tuple[str, bytes]] = (),
    ) -> EncodedBatch:
        return self.pack(seq, self.classify(position, events, rejects))


# KEYS: cursor, event counts, dead-letter stream, lease, dead-letter counts, then one
# stream per entry.
# ARGV: lease token ('' for an unleased producer), lease ttl ms, expected seq, new seq,
# position, events, entry count, dead-letter count; per entry: type, events, field count,
# fields...; per dead letter: reason, source, raw, detail, codec, events.
# No allow-oom flag: at maxmemory the whole script is refused before it starts (OOM), so
# a batch lands whole or not at all.
WRITE_SCRIPT = (
    "#!lua\n"
    + FENCE_LUA
    + ADD_ENTRIES_LUA
    + ADD_LETTER_LUA
    + """
local cursor, counts, deadletter, lease, letter_counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if ARGV[1] ~= '' and not fence(lease, ARGV[1], ARGV[2]) then
  return redis.error_reply('FENCED this ingester no longer holds ' .. lease)
end
local seq = tonumber(redis.call('HGET', cursor, '@seq') or '0')
local expected, new = tonumber(ARGV[3]), tonumber(ARGV[4])
if seq == new then return 0 end
if seq ~= expected then
  return redis.error_reply('FORGOT ' .. seq)
end
local i = add_entries(KEYS, 5, counts, ARGV, 9, tonumber(ARGV[7]))
for _ = 1, tonumber(ARGV[8]) do
  add_letter(deadletter, letter_counts, ARGV, i)
  i = i + @letter_fields
end
redis.call('HSET', cursor, '@position', ARGV[5], '@seq', new)
redis.call('HINCRBY', cursor, '@events', ARGV[6])
return 1
"""
)
for _token, _name in (
    ("@letter_fields", str(LETTER_FIELDS).encode()),
    ("@position", CURSOR_POSITION),
    ("@seq", CURSOR_SEQ),
    ("@events", CURSOR_EVENTS),
):
    WRITE_SCRIPT = WRITE_SCRIPT.replace(_token, _name.decode())


class Producer:
    """Appends batches to the streams of one key prefix, for one named source.

    Each batch is one script, atomic: it checks the ingest lease (fencing a stalled
    ingester out) and that the cursor's batch number is the one this process last wrote
    (so a Redis that forgot is noticed on the very next batch, even when the restart went
    unseen because redis-py reconnected by itself), then appends every entry, the dead
    letters and the new cursor.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        source: str,
        lease: Lease | None = None,
        replica_acks: tuple[int, int] = (0, 0),
    ) -> None:
        """``replica_acks``: (replicas, timeout ms) each batch waits for (Redis WAIT)."""
        self.client = client
        self.replica_acks = replica_acks
        self.short_acks = 0
        """Batches fewer replicas acknowledged in time than asked."""
        self.keys = keys
        self.source = source
        self.lease = lease
        self.cursor_key = keys.cursor(source)
        self._script = client.register_script(WRITE_SCRIPT)

    def checkpoint(self) -> Checkpoint:
        """The source position, batch number and event total of the last batch that landed."""
        try:
            raw = self.client.hgetall(self.cursor_key)
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"cannot read the cursor: {exc}") from exc
        position = raw.get(CURSOR_POSITION)
        return Checkpoint(
            position.decode() if isinstance(position, bytes) else None,
            int(raw.get(CURSOR_SEQ, 0)),
            int(raw.get(CURSOR_EVENTS, 0)),
        )

    def write(self, batch: EncodedBatch) -> bool:
        """Make ``batch`` durable in Redis; False if an earlier attempt had landed it.

        Raises BufferForgot when the cursor is behind the batch before this one (Redis
        lost confirmed batches), LeaseLost when another ingester owns the source now.
        """
        keys = [
            self.cursor_key,
            self.keys.event_counts,
            self.keys.deadletter,
            self._lease_key,
            self.keys.deadletter_counts,
        ]
        args: list[bytes | str | int] = [
            self.lease.token if self.lease else "",
            self.lease.ttl_ms if self.lease else 0,
            batch.seq - 1,
            batch.seq,
            batch.position,
            batch.events,
            len(batch.entries),
            len(batch.deadletters),
        ]
        for type_, fields in batch.entries.items():
            keys.append(self.keys.stream(type_))
            args += [type_, batch.counts[type_], len(fields)]
            for name, value in fields.items():
                args += [name, value]
        for dead in batch.deadletters:
            args += dead.args(self.source)
        landed = self._execute(keys, args, batch)
        self._await_replicas()
        return landed

    def _await_replicas(self) -> None:
        """WAIT for the replicas asked for: then a failover loses at most the next batch."""
        replicas, timeout_ms = self.replica_acks
        if not replicas:
            return
        try:
            acked = int(self.client.execute_command("WAIT", replicas, timeout_ms))
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(str(exc)) from exc
        if acked < replicas:
            self.short_acks += 1
            metrics.INGEST_REPLICA_ACK_SHORT.inc()

    @property
    def _lease_key(self) -> str:
        return self.lease.key if self.lease else self.keys.ingest_lease(self.source)

    def _execute(self, keys: list[str], args: list[bytes | str | int], batch: EncodedBatch) -> bool:
        try:
            return bool(self._script(keys=keys, args=args))
        except CONNECTION_ERRORS as exc:
            # The script may or may not have run: a retry finds out from the cursor.
            raise RedisUnavailable(str(exc)) from exc
        except redis.exceptions.OutOfMemoryError as exc:
            raise BufferFull(str(exc)) from exc
        except redis.ResponseError as exc:
            message = str(exc)
            cannot_persist = persist_error(message)
            if cannot_persist is not None:
                raise cannot_persist from None
            if message.startswith("FORGOT"):
                durable = self.checkpoint()
                where = "behind" if durable.seq < batch.seq else "ahead of"
                raise BufferForgot(
                    f"the cursor of {self.source} is at batch {durable.seq}, {where} batch "
                    f"{batch.seq - 1} that Redis had confirmed to this ingester",
                    durable,
                ) from None
            if message.startswith("FENCED"):
                # Safe to retry once the lease is ours again: the script's cursor check
                # refuses the batch if another ingester wrote in between (FORGOT, ahead).
                if self.lease is not None:
                    self.lease.held = False
                    if self.lease.reclaim():
                        return self._execute(keys, args, batch)
                raise LeaseLost(message.removeprefix("FENCED ")) from None
            if "OOM" in message:
                raise BufferFull(message) from None
            raise

    def memory_fraction(self) -> float:
        """used_memory / maxmemory (0.0 when Redis has no limit)."""
        try:
            info = self.client.info("memory")
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(str(exc)) from exc
        maxmemory = int(info.get("maxmemory", 0))
        return int(info["used_memory"]) / maxmemory if maxmemory else 0.0


__all__ = [
    "EncodedBatch",
    "Checkpoint",
    "Classified",
    "DeadLetter",
    "Encoder",
    "Producer",
    "Reason",
]
