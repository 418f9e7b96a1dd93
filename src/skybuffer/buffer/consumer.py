"""The DataWriter's side of the streams: group reads, claims, and the atomic commit.

Guarantees (tests/buffer/test_consumer.py proves each):

- One consumer group per stream (``datawriter``), created at ID 0 with MKSTREAM, so it
  sees every entry ever buffered; a deleted stream or group heals itself on the next read.
  Every write the writer makes is a script declaring ``allow-oom`` (see ``commit``), the
  group's creation included: a full Redis can always be drained.
- A batch is the consumer's own pending entries first (what a crashed run of the same
  consumer name left), then entries another consumer left pending longer than the claim
  idle time (XAUTOCLAIM), then new entries. XREADGROUP ``>`` hands each new entry to one
  consumer only, so two writers split the work and never double it; reads ask for no
  more new entries than the batch can take, so none wait in one writer's pending list
  while another is idle.
- ``commit`` is one Lua script, atomic: XACK + XDEL of every entry of the batch, the
  dead letters of the batch, and HINCRBY of the event counts by minus the events it
  removed. Only entries its own XDEL removed count, so two writers committing the same
  claimed entry cannot make the counts drift. The script declares ``allow-oom``: at
  maxmemory Redis refuses every command queued in MULTI (and HINCRBY/XADD are
  ``denyoom``), so a MULTI-based ack could not free memory exactly when it is needed.
- ``trim`` (XTRIM MINID) never passes an entry some group still has pending or has not
  yet delivered; it reclaims acknowledged entries that were not deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis

from skybuffer.buffer.codec import event_count
from skybuffer.buffer.deadletter import DeadLetter
from skybuffer.buffer.drain_scripts import COMMIT_SCRIPT, GROUP_SCRIPT, TRIM_SCRIPT
from skybuffer.buffer.lease import Lease, redis_call
from skybuffer.buffer.stream_ids import id_key
from skybuffer.constants import WRITER_GROUP, Keys
from skybuffer.errors import BufferForgot, CodecError, LeaseLost


@dataclass(slots=True)
class Entry:
    """One stream entry: a compressed micro-batch of events (fields empty when deleted)."""

    id: str
    fields: dict[bytes, bytes]

    @property
    def events(self) -> int:
        """Events the entry holds by its count field (0 when gone or unreadable)."""
        if not self.fields:
            return 0
        try:
            return event_count(self.fields)
        except CodecError:
            return 0


@dataclass
class ReadBatch:
    """Entries of one type read together; ``caught_up`` once the read reached ``until``."""

    type: str
    entries: list[Entry] = field(default_factory=list)
    events: int = 0
    caught_up: bool = False
    _ids: set[str] = field(default_factory=set, repr=False)

    def add(self, entry: Entry) -> None:
        """Add an entry once: a claim with no idle time also returns this consumer's own
        pending entries, which the batch may hold already."""
        if entry.id in self._ids:
            return
        self._ids.add(entry.id)
        self.entries.append(entry)
        self.events += entry.events

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]


@dataclass(frozen=True)
class Commit:
    """What a commit removed: entries, their events; and the events it dead-lettered."""

    entries: int
    events: int
    deadletters: int


class StreamConsumer:
    """One named consumer of the ``datawriter`` group on the streams of one key prefix.

    Its methods come in the order of a drain: the group, the reads, the commit, the trim.
    Every Redis call goes through ``_call`` (lease.redis_call: transient errors typed)."""

    _call = staticmethod(redis_call)

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        consumer: str,
        read_count: int = 200,
        claim_idle_seconds: float = 300.0,
        group: str = WRITER_GROUP,
        lease: Lease | None = None,
    ) -> None:
        self.client = client
        self.lease = lease
        self.keys = keys
        self.consumer = consumer
        self.read_count = read_count
        # The lease holder is the only writer: whatever another consumer left pending is
        # its to take at once (the other is dead or fenced); without a lease, wait.
        self.claim_idle_ms = 0 if lease is not None else int(claim_idle_seconds * 1000)
        self.group = group
        self._commit = client.register_script(COMMIT_SCRIPT)
        self._trim = client.register_script(TRIM_SCRIPT)
        self._group = client.register_script(GROUP_SCRIPT)
        self._ready: set[str] = set()
        self._per_entry: dict[str, float] = {}
        """Events per entry seen last, per type: sizes reads of new entries."""

    def ensure_group(self, type_: str) -> None:
        """Create the group at ID 0 (and the stream); an existing group is left as it is."""
        self._call(self._group, keys=[self.keys.stream(type_)], args=[self.group])
        self._ready.add(type_)

    def _ensure(self, type_: str) -> None:
        if type_ not in self._ready:
            self.ensure_group(type_)

    def forget_idle_consumers(self, type_: str) -> int:
        """Delete the group's other consumers that hold nothing pending: each process has
        its own name, so without this the group would keep every writer that ever ran.
        Only the lease holder calls it (no other consumer is active then)."""
        stream = self.keys.stream(type_)
        removed = 0
        for info in self._call(self.client.xinfo_consumers, stream, self.group):
            name = _text(info["name"])
            if name != self.consumer and int(info["pending"]) == 0:
                self._call(self.client.xgroup_delconsumer, stream, self.group, name)
                removed += 1
        return removed

    def last_id(self, type_: str) -> str:
        """The stream's last generated ID now ('0-0' when it never had an entry). A
        stream Redis no longer has (it forgot everything since the stream's first entry,
        as a replica promoted before its first sync does) gets its group again."""
        self._ensure(type_)
        try:
            info = self._call(self.client.xinfo_stream, self.keys.stream(type_))
        except redis.ResponseError as exc:
            if "no such key" not in str(exc):
                raise
            self.ensure_group(type_)
            info = self._call(self.client.xinfo_stream, self.keys.stream(type_))
        return _text(info["last-generated-id"])

    def read_batch(
        self, type_: str, max_events: int, until: str | None = None, new: bool = True
    ) -> ReadBatch:
        """Own pending entries, then claimed ones, then (if ``new``) new ones, up to
        ``max_events`` events (plus the rest of the last entry).

        New entries are read only up to ``until`` (inclusive, plus the rest of the read
        that reached it), so a drain ends even while the ingester keeps writing. Entries
        come back in stream order.
        """
        self._ensure(type_)
        batch = ReadBatch(type_)
        self._read_pending(batch, max_events)
        if batch.events < max_events:
            self._claim(batch, max_events)
        if not new:
            batch.caught_up = True
        elif batch.events < max_events:
            self._read_new(batch, max_events, until)
        batch.entries.sort(key=lambda e: id_key(e.id))
        return batch

    def _read_pending(self, batch: ReadBatch, max_events: int) -> None:
        cursor = "0"
        while batch.events < max_events:
            items = self._xreadgroup(batch.type, cursor)
            if not items:
                return
            cursor = _text(items[-1][0])
            _take(batch, items, max_events)

    def _claim(self, batch: ReadBatch, max_events: int) -> None:
        stream, cursor = self.keys.stream(batch.type), "0-0"
        claim = (stream, self.group, self.consumer, self.claim_idle_ms)
        while batch.events < max_events:
            reply = self._call(self.client.xautoclaim, *claim, cursor, count=self.read_count)
            cursor = _text(reply[0])
            _take(batch, reply[1], max_events)
            if cursor == "0-0":
                return

    def _read_new(self, batch: ReadBatch, max_events: int, until: str | None) -> None:
        if until is not None and id_key(until) == (0, 0):
            batch.caught_up = True
            return
        while batch.events < max_events:
            items = self._xreadgroup(batch.type, ">", self._new_count(batch, max_events))
            if not items:
                batch.caught_up = True
                return
            _take(batch, items, max_events)
            if until is not None and id_key(_text(items[-1][0])) >= id_key(until):
                batch.caught_up = True
                return

    def _new_count(self, batch: ReadBatch, max_events: int) -> int:
        """How many new entries to ask for: no more than the batch can take, so entries
        another writer could have taken do not sit in this consumer's pending list."""
        if batch.entries:
            self._per_entry[batch.type] = max(1.0, batch.events / len(batch.entries))
        per_entry = self._per_entry.get(batch.type)
        if per_entry is None:
            return 1  # a first read learns the entry size
        need = -(-(max_events - batch.events) // per_entry)
        return int(max(1, min(self.read_count, need)))

    def _xreadgroup(self, type_: str, cursor: str, count: int | None = None) -> list:
        stream = self.keys.stream(type_)
        count = count or self.read_count
        try:
            reply = self._call(
                self.client.xreadgroup, self.group, self.consumer, {stream: cursor}, count=count
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group(type_)  # the stream or group was deleted: heal, read again
            reply = self._call(
                self.client.xreadgroup, self.group, self.consumer, {stream: cursor}, count=count
            )
        return reply[0][1] if reply else []

    def commit(
        self,
        type_: str,
        entries: Sequence[Entry],
        deadletters: Mapping[str, Sequence[DeadLetter]] | None = None,
        source: str = "datawriter",
        lake_last: str = "",
    ) -> Commit:
        """Acknowledge and delete ``entries`` with their dead letters, atomically.

        Raises LeaseLost if another DataWriter holds the lease now (nothing committed),
        and BufferForgot if Redis's record of this type's last commit is behind
        ``lake_last``, the lake's own record of it (Redis forgot commits), or if a leased
        commit finds an entry it read gone (Redis forgot entries since the read)."""
        deadletters = deadletters or {}
        token = self.lease.token if self.lease else ""
        ttl = self.lease.ttl_ms if self.lease else 0
        args: list[bytes | str | int] = [self.group, type_, token, ttl, lake_last]
        for entry in entries:
            letters = deadletters.get(entry.id, ())
            args += [entry.id, entry.events, len(letters)]
            for dead in letters:
                args += dead.args(source)
        keys = [
            self.keys.stream(type_),
            self.keys.event_counts,
            self.keys.deadletter,
            self.keys.writer_lease,
            self.keys.writer_committed,
            self.keys.deadletter_counts,
        ]
        try:
            done, events, letters_written = self._call(self._commit, keys=keys, args=args)
        except redis.ResponseError as exc:
            message = str(exc)
            if message.startswith("FENCED"):
                if self.lease is not None:
                    self.lease.held = False
                raise LeaseLost(message.removeprefix("FENCED ")) from None
            if message.startswith("FORGOT"):
                raise BufferForgot(
                    f"{type_}: Redis's last commit is {message.split()[1]}, the lake's is "
                    f"{lake_last}: Redis forgot commits",
                    message.split()[1],
                ) from None
            if message.startswith("GONE"):
                raise BufferForgot(
                    f"{type_}: entry {message.split()[1]} of this batch is no longer in "
                    "Redis: Redis forgot entries since they were read"
                ) from None
            raise
        return Commit(int(done), int(events), int(letters_written))

    def committed(self, type_: str) -> str:
        """The last stream ID Redis has recorded as committed for ``type_`` ('0-0')."""
        raw = self._call(self.client.hget, self.keys.writer_committed, type_)
        return _text(raw) if raw else "0-0"

    def trim(self, type_: str) -> int:
        """XTRIM MINID to the oldest entry still needed; returns the entries trimmed."""
        return int(self._call(self._trim, keys=[self.keys.stream(type_)]))


def _take(batch: ReadBatch, items: list, max_events: int) -> None:
    """Append read entries until the batch is full; the rest stay pending in this
    consumer and open its next batch, so a batch is at most one entry over the limit."""
    for entry_id, fields in items:
        if batch.events >= max_events:
            return
        batch.add(Entry(_text(entry_id), fields or {}))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
