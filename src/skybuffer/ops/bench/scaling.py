"""`skybuffer bench ingest|write --mode cluster|sentinel`: the partitioned buffer, or the
sentinel topology with and without WAIT, beside standalone.

One run, the same pre-generated events (generation not timed) for every configuration:
standalone (one Redis, the plain prefix: today's pipeline), then a scratch local Redis
Cluster (three primaries, three replicas: buffer/cluster.py) with 1, 3 and 6 partitions.
For each: ingest throughput (every lane of pipeline/lanes.py reading the whole in-memory
stream and keeping its partition's share, as lanes do), Redis bytes per event (MEMORY
USAGE of every stream), then drain throughput (pipeline/writers.py: the partitions'
DataWriters, ``writer.partition_threads`` at a time) into a scratch lake.

From the bytes per event: how many hours of the firehose one node's maxmemory holds (at
the high-water mark, where ingest stops), and how many primaries hold 8 and 24 hours, at
``FIREHOSE_EVENTS_PER_S`` (the network's 2025 average; docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.spool import Spool
from skybuffer.buffer.topology import managed
from skybuffer.datadir import free_port
from skybuffer.ops.bench.ingest import stream_bytes
from skybuffer.ops.harness import START_US, machine
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.lanes import Lanes, PartitionView
from skybuffer.pipeline.writers import Writers
from skybuffer.settings import Settings, load_settings
from skybuffer.sources.memory import MemorySource
from skybuffer.testbed.generator import generate

FIREHOSE_EVENTS_PER_S = 1_000
"""Bluesky's Jetstream average in 2025 (research/jetstream notes): what the buffer is sized
for."""
NODE_MAXMEMORY = 2 * 1024**3
"""The shipped profile's maxmemory (2gb) per node."""
PARTITION_COUNTS = (1, 3, 6)


def bench_scaling(
    events: int,
    base: Settings,
    partitions: tuple[int, ...] = PARTITION_COUNTS,
    mode: str = "cluster",
) -> dict[str, Any]:
    """Ingest and drain ``events`` on standalone, then on a cluster with each partition
    count, or (``mode`` sentinel) on a sentinel topology without and with WAIT for one
    replica per batch (``ingest.replica_acks``: its cost)."""
    data = generate(1, events, START_US)
    with _scratch(base, "standalone", 1) as settings:  # warm-up: imports, first queries
        _measure(settings, data[: min(len(data), 20_000)], "standalone", 1)
    runs = []
    configs = [("standalone", 1, 0)]
    if mode == "sentinel":
        configs += [("sentinel", 1, 0), ("sentinel", 1, 1)]
    else:
        configs += [("cluster", count, 0) for count in partitions]
    for topology, count, acks in configs:
        with _scratch(base, topology, count, acks) as settings:
            runs.append(_measure(settings, data, topology, count))
    high_water = base.ingest.high_water
    for run in runs:
        run.update(_capacity(run["bytes_per_event"], high_water))
    return {
        "events": events,
        "firehose_events_per_s": FIREHOSE_EVENTS_PER_S,
        "node_maxmemory_bytes": NODE_MAXMEMORY,
        "runs": runs,
        "machine": machine(),
    }


@contextmanager
def _scratch(base: Settings, mode: str, count: int, acks: int = 0) -> Iterator[Settings]:
    """Settings of a scratch data dir whose Redis (one server, or a local cluster) runs."""
    directory = Path(tempfile.mkdtemp(prefix="skybuffer-scaling-"))
    redis: dict[str, Any] = {"url": None, "mode": mode, "port": free_port(), "partitions": count}
    redis |= {"conf": base.redis.conf, "maxmemory": None, "cluster_node_timeout_ms": 3000}
    settings = load_settings(
        data_dir=directory / "var",
        redis=redis,
        ingest={"replica_acks": acks},
        lake={"root": str(directory / "lake")},
        writer={"partition_threads": base.writer.partition_threads},
        metrics={"ingest_port": 0, "writer_port": 0},
    )
    settings.claim_ports()
    server = managed(settings.redis, settings.redis_dir)
    try:
        server.start()
        yield settings
    finally:
        try:
            server.stop(timeout=30)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def _measure(settings: Settings, data: list[bytes], mode: str, count: int) -> dict[str, Any]:
    from skybuffer.buffer.topology import connect

    partitions = Partitions.of_settings(settings.redis)
    clients = [
        connect(settings.redis, settings.redis_dir, partitions.prefix(p)) for p in range(count)
    ]
    lanes = _lanes(settings, partitions, clients, data)
    started = time.perf_counter()
    stats = lanes.run()
    ingest_seconds = time.perf_counter() - started
    assert stats.events == len(data), f"ingested {stats.events} of {len(data)}"
    size = sum(stream_bytes(c, partitions.keys(p)) for p, c in enumerate(clients))
    writers = Writers(settings)
    try:
        started = time.perf_counter()
        result, _ = writers.drain_once(wait=True)
        drain_seconds = time.perf_counter() - started
    finally:
        writers.release()
        writers.close()
    assert result.rows == len(data), f"drained {result.rows} of {len(data)}"
    return {
        "topology": mode,
        "partitions": count,
        "replica_acks": settings.ingest.replica_acks,
        "ingest_events_per_s": round(len(data) / ingest_seconds),
        "drain_events_per_s": round(len(data) / drain_seconds),
        "bytes_per_event": round(size / len(data), 1),
    }


def _lanes(
    settings: Settings, partitions: Partitions, clients: list[Any], data: list[bytes]
) -> Lanes:
    """A lane per partition over the in-memory events, as pipeline/runner.py wires them."""
    spool_dir = settings.ingest.spool_dir
    assert spool_dir is not None
    lanes = []
    for number, client in enumerate(clients):
        acks = (settings.ingest.replica_acks, settings.ingest.replica_ack_timeout_ms)
        producer = Producer(client, partitions.keys(number), "bench", None, acks)
        source = PartitionView(MemorySource(data), partitions, number)
        spool = Spool(spool_dir, f"bench.{number}")
        lanes.append(Ingester(producer, source, settings.ingest, spool))
    return Lanes(lanes)


def _capacity(bytes_per_event: float, high_water: float) -> dict[str, Any]:
    """Hours one node holds at the firehose's rate, and primaries for 8 and 24 hours."""
    per_hour = bytes_per_event * FIREHOSE_EVENTS_PER_S * 3600
    usable = NODE_MAXMEMORY * high_water
    return {
        "hours_per_node": round(usable / per_hour, 2),
        "hours_per_gb": round(1024**3 / per_hour, 2),
        "primaries_for_8h": math.ceil(8 * per_hour / usable),
        "primaries_for_24h": math.ceil(24 * per_hour / usable),
    }
