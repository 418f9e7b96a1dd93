"""What is in the buffer right now: events and oldest age per type, memory, dead letters;
and, for `skybuffer status`, what is in the lake (files, rows, bytes, newest partition).

The buffer part is read-only and cheap (HGETALL, XINFO STREAM per type, INFO memory), so
the live status line can call it every second. The lake part reads every file's Parquet
footer, so only `skybuffer status` asks for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from skybuffer.buffer.aof import aof_health, last_load
from skybuffer.buffer.deadletter import DeadLetterStore
from skybuffer.buffer.lease import holder_of
from skybuffer.buffer.partitions import Partitions
from skybuffer.constants import TYPES, Keys
from skybuffer.observability.writer_stats import merge_stats, read_stats
from skybuffer.settings import LakeSettings, Settings

if TYPE_CHECKING:  # DuckDB loads only when the lake is read
    from skybuffer.lake.query import TypeFigures


@dataclass
class StreamStatus:
    events: int = 0
    entries: int = 0
    oldest_age_seconds: float = 0.0


@dataclass
class LakeStatus:
    """The lake's figures per type; ``error`` when the lake could not be read."""

    root: str = ""
    types: dict[str, TypeFigures] = field(default_factory=dict)
    error: str | None = None

    @property
    def files(self) -> int:
        return sum(t.files for t in self.types.values())

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.types.values())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.types.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "types": {t: asdict(s) for t, s in self.types.items()},
            "files": self.files,
            "rows": self.rows,
            "bytes": self.bytes,
            "error": self.error,
        }


@dataclass
class BufferStatus:
    streams: dict[str, StreamStatus] = field(default_factory=dict)
    used_memory: int = 0
    maxmemory: int = 0
    deadletter: int = 0
    """Letters in the dead-letter stream (a letter holds one event or a bundle)."""
    deadletter_events: dict[str, int] = field(default_factory=dict)
    """Dead-lettered events by reason."""
    spool_bytes: int = 0
    owners: dict[str, str] = field(default_factory=dict)
    """Role -> who holds its lease now (the DataWriter, each source's ingester)."""
    lake: LakeStatus | None = None
    aof_writing: bool | None = None
    """False while Redis cannot write its AOF (None: unknown, or no AOF)."""
    warnings: list[str] = field(default_factory=list)
    """What an operator must act on, one line each, naming the fix."""
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """A partitioned buffer: each partition's events, entries and its node's memory."""

    @property
    def memory_fraction(self) -> float:
        return self.used_memory / self.maxmemory if self.maxmemory else 0.0

    @property
    def events(self) -> int:
        return sum(s.events for s in self.streams.values())

    def as_dict(self) -> dict[str, Any]:
        return (
            {
                "streams": {t: asdict(s) for t, s in self.streams.items()},
                "redis": {
                    "used_memory": self.used_memory,
                    "maxmemory": self.maxmemory,
                    "memory_percent": round(self.memory_fraction * 100, 2),
                },
                "deadletter": self.deadletter,
                "deadletter_events": self.deadletter_events,
                "spool_bytes": self.spool_bytes,
                "owners": self.owners,
                "aof_writing": self.aof_writing,
                "warnings": self.warnings,
            }
            | ({"lake": self.lake.as_dict()} if self.lake is not None else {})
            | ({"partitions": self.partitions} if self.partitions else {})
        )


def buffer_status(client: redis.Redis, keys: Keys, spool_dir: Path | None = None) -> BufferStatus:
    """Events buffered per type (events, not entries: entries hold micro-batches)."""
    counts = client.hgetall(keys.event_counts)
    now_ms = time.time() * 1000
    status = BufferStatus()
    for type_ in TYPES:
        stream = StreamStatus(events=int(counts.get(type_.encode(), 0)))
        try:
            info = client.xinfo_stream(keys.stream(type_))
        except redis.ResponseError:  # no such key yet
            info = None
        if info:
            stream.entries = int(info["length"])
            first = info.get("first-entry")
            if first:
                first_ms = int(first[0].split(b"-")[0])
                stream.oldest_age_seconds = round(max(0.0, now_ms - first_ms) / 1000, 3)
        status.streams[type_] = stream
    memory = client.info("memory")
    status.used_memory = int(memory["used_memory"])
    status.maxmemory = int(memory.get("maxmemory", 0))
    status.deadletter = int(client.xlen(keys.deadletter))
    status.deadletter_events = DeadLetterStore(client, keys).counts()
    if spool_dir is not None and spool_dir.exists():
        status.spool_bytes = sum(p.stat().st_size for p in spool_dir.glob("*.spool"))
    status.owners = role_owners(client, keys)
    health = aof_health(client)
    if health is not None:
        status.aof_writing = health.writing
        if not health.writing:
            status.warnings.append(
                "Redis cannot write its AOF (disk full?) and refuses writes: ingest is paused "
                "and the DataWriter waits; free space on the disk of Redis's dir. Redis "
                "retries every second and both go on by themselves"
            )
    return status


def merged_status(
    partitions: Partitions,
    client_for: Callable[[str], redis.Redis],
    spool_dir: Path | None = None,
) -> BufferStatus:
    """A partitioned buffer's status: the partitions' figures added up, the memory of the
    fullest node (the one that backpressures first), and each partition on its own."""
    total = BufferStatus()
    for number, name in enumerate(partitions.names()):
        keys = partitions.keys(number)
        one = buffer_status(client_for(keys.prefix), keys)
        for type_, stream in one.streams.items():
            into = total.streams.setdefault(type_, StreamStatus())
            into.events += stream.events
            into.entries += stream.entries
            into.oldest_age_seconds = max(into.oldest_age_seconds, stream.oldest_age_seconds)
        if one.memory_fraction >= total.memory_fraction:
            total.used_memory, total.maxmemory = one.used_memory, one.maxmemory
        total.deadletter += one.deadletter
        for reason, events in one.deadletter_events.items():
            total.deadletter_events[reason] = total.deadletter_events.get(reason, 0) + events
        total.owners |= {f"{name}:{role}": owner for role, owner in one.owners.items()}
        if one.aof_writing is not None:
            total.aof_writing = bool(total.aof_writing is not False and one.aof_writing)
        total.warnings += [w for w in one.warnings if w not in total.warnings]
        total.partitions[name] = {
            "prefix": keys.prefix,
            "events": one.events,
            "entries": sum(s.entries for s in one.streams.values()),
            "memory_percent": round(one.memory_fraction * 100, 2),
            "oldest_age_seconds": max(
                (s.oldest_age_seconds for s in one.streams.values()), default=0.0
            ),
        }
    if spool_dir is not None and spool_dir.exists():
        total.spool_bytes = sum(p.stat().st_size for p in spool_dir.glob("*.spool"))
    return total


def role_owners(client: redis.Redis, keys: Keys) -> dict[str, str]:
    """Who holds each role's lease: ``datawriter`` and ``ingest:{source}``."""
    leases = [keys.writer_lease]
    leases += sorted(k.decode() for k in client.scan_iter(match=keys.ingest_lease("*")))
    owners = {}
    for key in leases:
        owner = holder_of(client, key)
        if owner is not None:
            owners[key.removeprefix(f"{keys.prefix}lease:")] = owner.describe()
    return owners


def lake_status(lake: LakeSettings) -> LakeStatus:
    """Files, rows and bytes per type and the newest partition of the lake."""
    import duckdb

    from skybuffer.lake.query import lake_figures

    status = LakeStatus(root=lake.root or "")
    try:
        figures = lake_figures(lake)
    except (duckdb.Error, OSError) as exc:
        status.error = f"cannot read the lake at {lake.root}: {exc}"
        return status
    status.types = figures
    return status


class BufferView:
    """The buffer of a data dir in whatever layout it has: one client per partition
    (buffer/partitions.py), kept for repeated looks (the live status line)."""

    def __init__(self, settings: Settings) -> None:
        from skybuffer.buffer.topology import connect

        self.settings = settings
        self.partitions = Partitions.of_settings(settings.redis)
        self.clients = {
            self.partitions.prefix(p): connect(
                settings.redis, settings.redis_dir, self.partitions.prefix(p)
            )
            for p in range(self.partitions.count)
        }

    def status(self) -> BufferStatus:
        """The buffer's figures (added up over partitions, each listed too)."""
        spool_dir = self.settings.ingest.spool_dir
        if self.partitions.partitioned:
            return merged_status(self.partitions, self.clients.__getitem__, spool_dir)
        (client,) = self.clients.values()
        return buffer_status(client, self.partitions.keys(0), spool_dir)

    def writer_stats(self) -> dict[str, float]:
        """The DataWriter's figures (of every partition, added up)."""
        parts = [
            read_stats(self.clients[k.prefix], k)
            for k in map(self.partitions.keys, range(self.partitions.count))
        ]
        return merge_stats(parts)

    def stranded_warnings(self) -> list[str]:
        first = self.clients[self.partitions.prefix(0)]
        return [
            f"{events:,} events wait under {prefix!r}, a partition layout other than "
            f"redis.partitions = {self.partitions.count}: set it back and drain them first"
            for prefix, events in sorted(self.partitions.stranded(first).items())
        ]


def collect_status(settings: Settings) -> BufferStatus:
    """Status of the buffer of a data dir (starting its managed Redis when needed), with
    the lake's figures."""
    view = BufferView(settings)
    status = view.status()
    status.warnings += view.stranded_warnings()
    load = None if settings.redis.url else last_load(settings.redis_dir)
    if load is not None and load.truncated:
        status.warnings.append(load.describe())
    status.lake = lake_status(settings.lake)
    return status
