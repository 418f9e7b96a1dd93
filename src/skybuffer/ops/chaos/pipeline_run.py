"""What the chaos experiments that run the whole pipeline share (`chaos forget`, `chaos
failover`): a scratch data dir with synthetic events in a file; the real ingester, with its
lease, reading them through the local Jetstream-protocol server (``jetstream``) or
straight from the file (``replay``), and a DataWriter loop, each on a thread; a fault in
the middle (the experiment's own ``fault``); and, once every event is confirmed and
drained, the count by event identity: ``lost`` = source events not in the lake once,
``duplicated`` = extra copies. A partitioned run (`chaos failover --mode cluster`)
replaces the ingester with its lanes and the drain with its partitions' (``ingester``,
``drain_loop``, ``buffered``).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import redis

from skybuffer.buffer.lease import Lease
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.spool import Spool
from skybuffer.constants import Keys
from skybuffer.errors import BufferFull, LeaseLost, RedisUnavailable
from skybuffer.events import identity
from skybuffer.ops.harness import START_US
from skybuffer.pipeline.datawriter import DataWriter
from skybuffer.pipeline.drain_result import DrainResult
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.lanes import Lanes
from skybuffer.settings import Settings
from skybuffer.sources.base import Source, SourceBatch
from skybuffer.testbed.generator import generate

SOURCES = ("jetstream", "replay")
REDIS_AWAY = (RedisUnavailable, BufferFull, LeaseLost, redis.ConnectionError, redis.TimeoutError)
"""What a call meets while the fault has Redis away (restarting, failing over)."""


class PipelineRun(ABC):
    """One pipeline on a scratch data dir; subclasses set ``settings`` and say how the
    buffer starts, stops and is reached, and what the fault is (the abstract methods);
    a partitioned run also replaces ``ingester``, ``drain_loop`` and ``buffered``.
    ``execute`` runs it all; the steps follow it in the order they run."""

    name = "chaos"
    gate_at = 0.7
    """The source waits at this share of its events until the fault is over (GatedSource)."""
    deadline_seconds = 600.0
    """Bounds a hang only: a run not finished by then is reported as failed."""
    settings: Settings

    def __init__(self, scratch: Path, source: str, events: int, rate: float, seed: int) -> None:
        if source not in SOURCES:
            raise ValueError(f"--source must be one of {', '.join(SOURCES)}")
        self.kind, self.events, self.rate = source, events, rate
        self.file = scratch / "events.jsonl"
        self.lines = generate(seed, events, START_US)
        self.file.write_bytes(b"\n".join(self.lines) + b"\n")
        self.fault_over = threading.Event()
        """Set by the fault once Redis serves again: the gated source goes on."""
        self.replayed = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    @abstractmethod
    def start_buffer(self) -> None:
        """Start the experiment's Redis (one server, a sentinel topology, a cluster)."""

    @abstractmethod
    def stop_buffer(self) -> None:
        """Stop what ``start_buffer`` started."""

    @abstractmethod
    def client(self, user: str = "skybuffer") -> redis.Redis:
        """A client of the buffer for ``user``, as the pipeline reaches it."""

    @abstractmethod
    def fault(self, ingester: Ingester | Lanes) -> dict[str, Any]:
        """Do the harm while the pipeline runs, set ``fault_over`` once Redis serves
        again, wait for the pipeline to recover; return the fault's own figures."""

    def execute(self) -> dict[str, Any]:
        self.start_buffer()
        replay_server = None
        try:
            if self.kind == "jetstream":
                replay_server = _start_replay_server(self.file, self.rate)
            ingester = self.ingester(replay_server.url if replay_server else None)
            threads = [
                threading.Thread(target=self._guarded, args=(ingester.run, self.stop), daemon=True),
                threading.Thread(target=self._guarded, args=(self.drain_loop,), daemon=True),
            ]
            for thread in threads:
                thread.start()
            fault = self.fault(ingester)
            self._wait_until_done(ingester)
            self.stop.set()
            for thread in threads:
                thread.join(timeout=60)
            return {**fault, **self._count(ingester)}
        finally:
            self.stop.set()
            if replay_server is not None:
                replay_server.stop()
            self.stop_buffer()

    def wait(self, condition: Callable[[], object], what: str) -> None:
        """Until ``condition`` holds (false while Redis cannot answer), a thread fails, or
        the deadline passes."""
        deadline = time.monotonic() + self.deadline_seconds
        while not _holds(condition):
            if self.errors:
                raise RuntimeError(f"waiting for {what}: {self.errors[0]!r}") from self.errors[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"chaos {self.name}: gave up waiting for {what}")
            time.sleep(0.02)

    def ingester(self, url: str | None) -> Ingester | Lanes:
        """The ingester of the buffer's one prefix, reading the gated source."""
        return self.lane(self.client(), Keys(self.settings.redis.prefix), self.source(url))

    def source(self, url: str | None) -> Source:
        """A connection to the local Jetstream-protocol server (``url``), or the file read
        at the run's pace; held back at ``gate_at`` until the fault is over."""
        from skybuffer.sources import open_source

        source: Source = open_source(
            "jetstream" if url else "replay",
            rate=0.0 if url else self.rate,
            seed=0,
            file=None if url else self.file,
            url=url,
            collections=[],
            jetstream=self.settings.jetstream,
        )
        return GatedSource(source, int(self.events * self.gate_at), self.fault_over)

    def lane(self, client: redis.Redis, keys: Keys, source: Source, name: str = "") -> Ingester:
        """An Ingester of one key prefix (partition ``name``) with its lease and spool."""
        s = self.settings
        what = f"chaos {self.name} ingester"
        lease = Lease(client, keys.ingest_lease(source.name), 5, what)
        producer = Producer(client, keys, source.name, lease)
        assert s.ingest.spool_dir is not None
        spool = Spool(s.ingest.spool_dir, f"{source.name}.{name}" if name else source.name)
        return Ingester(producer, source, s.ingest, spool)

    def drain_loop(self) -> None:
        """The DataWriter, holding its lease for each round."""
        writer = DataWriter.from_settings(self.settings)

        def drain() -> DrainResult:
            with writer.owning(wait=True, stop=self.stop):
                return writer.drain_once()

        try:
            self.rounds(drain)
        finally:
            writer.close()

    def rounds(self, drain: Callable[[], DrainResult]) -> None:
        """``drain`` every half second until the run stops; a round that meets Redis away
        (the fault) is simply the next round's work."""
        while not self.stop.is_set():
            try:
                result = drain()
                self.replayed += sum(r.replayed for r in result.types.values())
            except REDIS_AWAY:
                pass
            self.stop.wait(0.5)

    def _guarded(self, target: Callable[..., object], *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.errors.append(exc)
            self.stop.set()

    def _wait_until_done(self, ingester: Ingester | Lanes) -> None:
        """Every source event confirmed (by the durable cursor) and drained."""
        self.wait(lambda: confirmed(ingester) >= self.events, "every event ingested")
        self.wait(lambda: self.buffered() == 0, "the buffer drained")

    def buffered(self) -> int:
        """Events in the buffer now (by its counters)."""
        keys = Keys(self.settings.redis.prefix)
        return sum(int(v) for v in self.client("admin").hgetall(keys.event_counts).values())

    def _count(self, ingester: Ingester | Lanes) -> dict[str, Any]:
        source = Counter(identity(orjson.loads(line)) for line in self.lines)
        lake = lake_identities(Path(str(self.settings.lake.root)))
        return {
            "events": self.events,
            "lake_rows": sum(lake.values()),
            "lost": sum((source - lake).values()),
            "duplicated": sum((lake - source).values()),
            "forgotten": ingester.stats.forgotten,
            "rewinds": ingester.stats.rewinds,
            "replayed": self.replayed,
        }


class GatedSource:
    """Holds its source back at ``at`` events until ``gate`` opens, so that the fault
    happens while the ingester still has events to read: one that had finished would
    never write again, so never notice what Redis lost (its next start simply resumes
    from the cursor)."""

    def __init__(self, inner: Source, at: int, gate: threading.Event) -> None:
        self.inner, self.at, self.gate = inner, at, gate
        self.name = inner.name
        self._closed = threading.Event()

    def resume(self, position: str | None) -> None:
        self._closed.clear()
        self.inner.resume(position)

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        seen = 0
        for batch in self.inner.batches(max_events, linger_seconds):
            seen += len(batch.events) + len(batch.rejects)
            while seen >= self.at and not self.gate.is_set() and not self._closed.is_set():
                self.gate.wait(0.05)
            yield batch

    def close(self) -> None:
        self._closed.set()
        self.inner.close()


def lake_identities(root: Path) -> Counter[tuple[Any, ...]]:
    """Every lake row's event identity (events.identity), counted."""
    found: Counter[tuple[Any, ...]] = Counter()
    columns = ["did", "kind", "collection", "rkey", "time_us"]
    for path in root.rglob("*.parquet"):
        if "_quarantine" in path.parts:
            continue
        for row in pq.read_table(path, columns=columns).to_pylist():
            collection = row["collection"] or row["kind"] or ""
            found[(row["did"], collection, row["rkey"] or "", row["time_us"])] += 1
    return found


def confirmed(ingester: Ingester | Lanes) -> int:
    """Source events Redis holds now by the durable cursors (what survives a fault)."""
    return sum(lane.producer.checkpoint().events for lane in lanes_of(ingester))


def landed(ingester: Ingester | Lanes) -> int:
    """Events the ingester has had confirmed, forgotten ones included: what it must have
    confirmed again once it recovered from a Redis that forgot."""
    return ingester.stats.events + ingester.stats.forgotten


def batches_landed(ingester: Ingester | Lanes) -> int:
    """Batches Redis has confirmed to the ingester: grows only when one lands (a forget
    takes events off the counts, never batches, so its detection is not a landing)."""
    return ingester.stats.batches


def lanes_of(ingester: Ingester | Lanes) -> list[Ingester]:
    return ingester.lanes if isinstance(ingester, Lanes) else [ingester]


def _holds(condition: Callable[[], object]) -> bool:
    """A condition asked of Redis mid-fault is false while Redis cannot answer."""
    try:
        return bool(condition())
    except REDIS_AWAY:
        return False


def _start_replay_server(path: Path, rate: float) -> Any:
    from skybuffer.testbed.event_file import EventFile
    from skybuffer.testbed.replay_server import ReplayServer, ServerThread

    return ServerThread(ReplayServer(EventFile.load(path), rate=rate)).start()
