"""`skybuffer chaos memory`: fill Redis past its limit under both policies, count the loss.

The experiment behind DESIGN.md's "noeviction, not allkeys-lru", in numbers. Two
throw-away redis-servers of the shipped profile with a small maxmemory, one per setup,
get the same offered load: the same synthetic events at the same paced rate, while the
same consumer (skybuffer's StreamConsumer: XREADGROUP, then XACK+XDEL) drains at a fixed
rate four times slower and only once memory first reached 85%, so the buffer overflows
whatever the machine's speed. The setups differ only where the two designs differ:

- skybuffer: ``noeviction`` and the ingester's backpressure (pause at 85%, resume below
  75%): the producer slows down to what the consumer takes;
- the seed (MET-27): ``allkeys-lru`` and no backpressure (its producer has none): Redis
  makes room by evicting whole keys, i.e. whole streams with their consumer groups.

Afterwards the consumer drains what is left. accepted = distinct events Redis confirmed;
readable = distinct events the consumer got; lost = accepted - readable.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from skybuffer.buffer.codec import Decoder
from skybuffer.buffer.consumer import StreamConsumer
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.spool import Spool
from skybuffer.constants import TYPES, Keys
from skybuffer.ops.harness import (
    START_US,
    Checksum,
    ChecksumSource,
    pyplot,
    save_plot,
    scratch_redis,
)
from skybuffer.ops.report import Plot, Report, Table
from skybuffer.pipeline.ingest import Ingester
from skybuffer.settings import IngestSettings, Settings
from skybuffer.sources.synthetic import SyntheticSource

SETUPS = {
    "skybuffer: noeviction + backpressure": ("noeviction", True),
    "seed: allkeys-lru, no backpressure": ("allkeys-lru", False),
}
SETTLE_SECONDS = 120.0  # longest wait for the final drain
DRAIN_START = 85.0  # % of maxmemory at which the consumer starts


class Drain(threading.Thread):
    """A consumer on a thread: skybuffer's StreamConsumer reading every type, decoding
    each entry (so 'readable' means decodable) and committing (XACK + XDEL), at most
    ``rate`` events/s. Records (time, call ms, events, delivery lag ms) per read."""

    def __init__(self, client: redis.Redis, keys: Keys, rate: float = 0.0, chunk: int = 2000):
        super().__init__(name="ops-drain", daemon=True)
        self.consumer = StreamConsumer(client, keys, "ops-drain", read_count=10)
        self.keys, self.rate, self.chunk = keys, rate, chunk
        self.checksum = Checksum(keep_distinct=True)
        self.reads: list[tuple[float, float, int, float]] = []
        self.errors = 0
        self.halt = threading.Event()
        self._decoder = Decoder()
        for type_ in TYPES:
            self.consumer.ensure_group(type_)

    @property
    def events(self) -> int:
        return self.checksum.count

    def run(self) -> None:
        began = time.monotonic()
        while not self.halt.is_set():
            moved = self.drain_once()
            if self.rate:
                ahead = self.events / self.rate - (time.monotonic() - began)
                self.halt.wait(max(0.0, ahead))
            if not moved:
                self.halt.wait(0.05)

    def drain_once(self) -> int:
        """One read + commit per type; events moved."""
        moved = 0
        for type_ in TYPES:
            started = time.monotonic()
            try:
                batch = self.consumer.read_batch(type_, self.chunk)
                for entry in batch.entries:
                    for event in self._decoder.decode(entry.fields) if entry.fields else ():
                        self.checksum.add(event)
                if batch.entries:
                    self.consumer.commit(type_, batch.entries)
            except redis.ResponseError:  # a stream evicted between two calls (allkeys-lru)
                self.errors += 1
                continue
            if batch.events:
                lag = time.time() * 1000 - int(batch.entries[0].id.split("-")[0])
                ms = (time.monotonic() - started) * 1000
                self.reads.append((time.monotonic(), ms, batch.events, lag))
            moved += batch.events
        return moved

    def finish(self, timeout: float = SETTLE_SECONDS) -> None:
        """Stop pacing and read everything left, then stop the thread."""
        self.halt.set()
        self.join()
        deadline = time.monotonic() + timeout
        while self.drain_once() and time.monotonic() < deadline:
            pass


@dataclass(frozen=True)
class OfferedLoad:
    """The offered load, identical for both setups."""

    events: int = 600_000
    maxmemory: str = "32mb"
    ingest_rate: float = 40_000
    drain_rate: float = 10_000
    seed: int = 11


def run_chaos_memory(
    settings: Settings,
    events: int = 600_000,
    maxmemory: str = "32mb",
    ingest_rate: float = 40_000,
    drain_rate: float = 10_000,
) -> Report:
    """Both setups under the same load; the table that justifies the default policy."""
    load = OfferedLoad(events, maxmemory, ingest_rate, drain_rate)
    runs = {name: fill(settings, *setup, load) for name, setup in SETUPS.items()}
    return _report(runs, asdict(load)).write(settings.reports_dir)


def fill(settings: Settings, policy: str, backpressure: bool, load: OfferedLoad) -> dict[str, Any]:
    """One setup on its own scratch server: ingest while draining slower, then drain all."""
    keys = Keys(Keys(settings.redis.prefix).ops_prefix + "chaos:")
    ingest = _ingest_settings(settings.ingest, backpressure)
    spool_dir = Path(tempfile.mkdtemp(prefix="skybuffer-chaos-spool-"))
    config = {"maxmemory-policy": policy}
    scratch = scratch_redis(settings.redis, maxmemory=load.maxmemory, config=config)
    try:
        with scratch as server:
            admin, offered = server.client("admin"), Checksum(keep_distinct=True)
            synthetic = SyntheticSource(
                load.seed, rate=load.ingest_rate, count=load.events, start_us=START_US
            )
            producer = Producer(server.client(), keys, "chaos")
            source = ChecksumSource(synthetic, offered)
            ingester = Ingester(producer, source, ingest, Spool(spool_dir, "chaos"))
            drain = Drain(server.client("admin"), keys, rate=load.drain_rate)
            timeline = _run_with_drain(admin, ingester, drain)
            return _outcome(admin, policy, backpressure, ingester, drain, offered, timeline)
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)


def _ingest_settings(base: IngestSettings, backpressure: bool) -> IngestSettings:
    """Small batches (the buffer is small); no high-water mark for the seed's setup."""
    update: dict[str, Any] = {"batch_events": 1000, "backoff_max_seconds": 0.5}
    if not backpressure:
        update.update(high_water=1e9, low_water=1e9 - 1)  # model_copy: unvalidated, never reached
    return base.model_copy(update=update)


def _run_with_drain(
    admin: redis.Redis, ingester: Ingester, drain: Drain
) -> list[tuple[float, float, int]]:
    """Ingest on this thread; the drain starts once memory first reaches DRAIN_START
    (so both setups overflow whatever the machine's speed) or when the ingest ends.
    A sampler records (seconds, memory %, evicted keys) every 0.1 s."""
    timeline: list[tuple[float, float, int]] = []
    done, began = threading.Event(), time.monotonic()

    def sample() -> None:
        while not done.is_set():
            info = {**admin.info("memory"), **admin.info("stats")}
            share = int(info["used_memory"]) / max(int(info["maxmemory"]), 1) * 100
            timeline.append((time.monotonic() - began, share, int(info["evicted_keys"])))
            if share >= DRAIN_START and not drain.is_alive():
                drain.start()
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        ingester.run()
    finally:
        done.set()
        sampler.join()
        if not drain.is_alive():
            drain.start()
        drain.finish()
    return timeline


def _outcome(
    admin: redis.Redis,
    policy: str,
    backpressure: bool,
    ingester: Ingester,
    drain: Drain,
    offered: Checksum,
    timeline: list[tuple[float, float, int]],
) -> dict[str, Any]:
    stats = {**admin.info("stats"), **admin.info("memory")}
    # Distinct events: the ingester ran to the end of its source, so every event it was
    # handed was confirmed; an evicted cursor makes it hand some on twice (a rewind).
    accepted, readable = offered.distinct, drain.checksum.distinct
    errors = admin.info("errorstats")
    return {
        "policy": policy,
        "backpressure": backpressure,
        "offered": offered.count,
        "accepted": len(accepted),
        "readable": len(readable & accepted),
        "lost": len(accepted - readable),
        "evicted_keys": int(stats.get("evicted_keys", 0)),
        "oom_rejections": int(errors.get("errorstat_OOM", {}).get("count", 0)),
        "backpressure_seconds": round(ingester.stats.backpressure_seconds, 2),
        "cursor_forgotten": ingester.stats.rewinds,
        "peak_memory_percent": round(max((s for _, s, _ in timeline), default=0.0), 1),
        "drain_errors": drain.errors,
        "seconds": round(timeline[-1][0], 1) if timeline else 0.0,
        "timeline": [
            {"s": round(t, 2), "memory_percent": round(m, 1), "evicted_keys": e}
            for t, m, e in timeline
        ],
    }


def _report(runs: dict[str, dict[str, Any]], params: dict[str, Any]) -> Report:
    rows = [_row(name, run) for name, run in runs.items()]
    notes = [
        f"Same load for both: {params['events']:,} synthetic events offered at "
        f"{params['ingest_rate']:,.0f} ev/s into maxmemory {params['maxmemory']}; one consumer "
        f"starts when memory first reaches {DRAIN_START:.0f}% and drains at most "
        f"{params['drain_rate']:,.0f} ev/s, then everything left once the ingest ends.",
        "accepted = distinct events confirmed by Redis; readable = distinct events decoded "
        "by the consumer; lost = accepted - readable. When allkeys-lru evicts the "
        "ingester's cursor, the ingester notices (the buffer forgot: cursor_forgotten) and "
        "rewinds its source, so some events are handed on twice: counted once.",
        "noeviction + backpressure: at 85% the ingester stops taking events (the source "
        "waits, as Jetstream's cursor would) and resumes below 75%; nothing is deleted.",
        "allkeys-lru, no backpressure (the seed): Redis stays under the limit by evicting "
        "whole stream keys, each with every buffered event of a type and its consumer group; "
        "the consumer re-creates the group and never learns what it missed.",
        "With allkeys-lru and backpressure together the ingester would usually stop first, "
        "but any memory the ingester does not control (another writer, client buffers, "
        "fragmentation) still evicts whole streams: noeviction makes that impossible.",
    ]
    lost = runs[next(iter(SETUPS))]["lost"]
    data = {"parameters": params, "runs": runs, "noeviction_lost": lost}
    return Report(
        command="chaos-memory",
        title="skybuffer chaos memory: noeviction vs allkeys-lru",
        data=data,
        tables=[Table("chaos memory: events accepted, readable, lost", rows)],
        notes=notes,
        plots=[Plot("memory", lambda path: _plot(runs, path))],
        exit_code=0 if lost == 0 else 1,
    )


def _row(name: str, run: dict[str, Any]) -> dict[str, Any]:
    """One setup's line of the table."""
    return {
        "setup": name,
        "accepted": run["accepted"],
        "readable": run["readable"],
        "lost": run["lost"],
        "evicted keys": run["evicted_keys"],
        "peak memory %": run["peak_memory_percent"],
        "backpressure s": run["backpressure_seconds"],
    }


def _plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Memory over time for each setup, and the evicted-keys count for the seed's."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, run in runs.items():
        xs = [p["s"] for p in run["timeline"]]
        top.plot(xs, [p["memory_percent"] for p in run["timeline"]], label=name)
        bottom.plot(xs, [p["evicted_keys"] for p in run["timeline"]], label=name)
    top.axhline(100, color="red", linewidth=0.8)
    top.axhline(85, color="orange", linestyle=":", linewidth=0.8, label="high-water 85%")
    top.set(ylabel="used_memory % of maxmemory", title="Filling Redis past its limit")
    bottom.set(xlabel="seconds", ylabel="evicted keys (each a whole key)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_plot(fig, path)
