"""The DataWriter-serving process's view of the pipeline, computed at scrape time.

One collector for what no single short-lived process can keep: the DataWriter's
cumulative figures (from Redis, observability/writer_stats.py), the buffer (events and
oldest age per type, dead letters: observability/status.py), and the lake (bytes per type and
free disk, local lakes only, refreshed at most once a minute because it walks files).
`skybuffer serve` and `skybuffer write --loop` register it; an unreachable Redis makes
its Redis-side series disappear (RedisDown says why) instead of failing the scrape.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from skybuffer import metrics
from skybuffer.buffer.partitions import Partitions
from skybuffer.constants import TYPES, Keys
from skybuffer.events import Reason
from skybuffer.observability.lake_state import lake_state, seal_families
from skybuffer.observability.status import BufferStatus, buffer_status, merged_status
from skybuffer.observability.writer_stats import WriterStatsCollector
from skybuffer.settings import Settings

LAKE_REFRESH_SECONDS = 60.0


class PipelineCollector(Collector):
    """skybuffer_writer_*, skybuffer_buffer_*, skybuffer_deadletter_buffered_events and
    skybuffer_lake_* for one key prefix and one lake."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        lake_root: str | None,
        partitions: Partitions | None = None,
        client_for: Callable[[str], redis.Redis] | None = None,
    ) -> None:
        """A partitioned buffer: ``partitions`` and a client per partition prefix
        (``client_for``); the figures are added up, and also given per partition."""
        self.client = client
        self.keys = keys
        self.partitions = partitions if partitions is not None and partitions.partitioned else None
        self.parts = [(client, keys)]
        if self.partitions is not None and client_for is not None:
            every = range(self.partitions.count)
            self.parts = [
                (client_for(self.partitions.prefix(p)), self.partitions.keys(p)) for p in every
            ]
        self.writer = WriterStatsCollector(client, keys, self.parts)
        self.lake_root = Path(lake_root) if lake_root and "://" not in lake_root else None
        self._lake_cache: tuple[float, dict[str, int]] = (0.0, {})

    def collect(self) -> Iterator[Metric]:
        yield from self.writer.collect()
        try:
            status = self._buffer()
        except redis.RedisError:
            status = None  # Redis down: RedisDown alerts; these series are simply absent
        if status is not None:
            yield from _buffer_families(status)
            yield from _partition_families(status)
        yield from self._lake()

    def _buffer(self) -> BufferStatus:
        if self.partitions is None:
            return buffer_status(self.client, self.keys)
        clients = {keys.prefix: client for client, keys in self.parts}
        return merged_status(self.partitions, clients.__getitem__)

    def describe(self) -> Iterator[Metric]:
        """Every family this collector exposes, without samples (no Redis, no disk)."""
        yield from self.writer.describe()
        yield from _buffer_families(BufferStatus())
        yield from _partition_families(BufferStatus())
        yield from _lake_families({}, 0)
        yield from seal_families({})

    def _lake(self) -> Iterator[Metric]:
        if self.lake_root is None or not self.lake_root.exists():
            return
        yield from _lake_families(self._lake_sizes(), shutil.disk_usage(self.lake_root).free)
        yield from seal_families(lake_state(self.lake_root))

    def _lake_sizes(self) -> dict[str, int]:
        taken, sizes = self._lake_cache
        if time.monotonic() - taken < LAKE_REFRESH_SECONDS and sizes:
            return sizes
        assert self.lake_root is not None
        sizes = {
            t: sum(p.stat().st_size for p in (self.lake_root / t).rglob("*.parquet")) for t in TYPES
        }
        self._lake_cache = (time.monotonic(), sizes)
        return sizes


def _buffer_families(status: BufferStatus) -> Iterator[Metric]:
    events = GaugeMetricFamily(
        "skybuffer_buffer_events",
        "Events buffered in Redis and not yet written to the lake, by type.",
        labels=["type"],
    )
    age = GaugeMetricFamily(
        "skybuffer_buffer_oldest_age_seconds",
        "Age of the oldest buffered entry, by type (0 when empty).",
        labels=["type"],
    )
    for type_, stream in status.streams.items():
        events.add_metric([type_], stream.events)
        age.add_metric([type_], stream.oldest_age_seconds)
    yield events
    yield age
    letters = GaugeMetricFamily(
        "skybuffer_deadletter_buffered_events",
        "Events in the dead-letter stream, by reason.",
        labels=["reason"],
    )
    # Every reason, 0 when none: a fixed label set, and a series that exists before the first.
    for reason in sorted({*map(str, Reason), *status.deadletter_events}):
        letters.add_metric([reason], status.deadletter_events.get(reason, 0))
    yield letters


def _partition_families(status: BufferStatus) -> Iterator[Metric]:
    """Per partition of a partitioned buffer (no samples otherwise): what a partition's
    writer has left behind shows here, where the sums would hide it."""
    events = GaugeMetricFamily(
        "skybuffer_partition_buffer_events",
        "Events buffered in one partition of a partitioned buffer.",
        labels=["partition"],
    )
    age = GaugeMetricFamily(
        "skybuffer_partition_oldest_age_seconds",
        "Age of one partition's oldest buffered entry, all types (0 when empty).",
        labels=["partition"],
    )
    for name, figures in status.partitions.items():
        events.add_metric([name], figures["events"])
        age.add_metric([name], figures.get("oldest_age_seconds", 0.0))
    yield events
    yield age


def _lake_families(sizes: dict[str, int], free: int) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "skybuffer_lake_bytes", "Bytes of Parquet in the lake, by type.", labels=["type"]
    )
    for type_, size in sizes.items():
        family.add_metric([type_], size)
    yield family
    yield GaugeMetricFamily(
        "skybuffer_lake_free_bytes", "Free bytes on the filesystem of the lake.", value=free
    )


_serving: set[int] = set()


def serve_writer_metrics(settings: Settings) -> None:
    """Register the collector and serve /metrics on ``metrics.writer_port`` (once per
    process: a second call is a no-op)."""
    settings.claim_ports()
    port = settings.metrics.writer_port
    if not port or port in _serving:
        return
    from skybuffer.buffer.topology import connect

    partitions = Partitions.of_settings(settings.redis)
    client = connect(settings.redis, settings.redis_dir, partitions.prefix(0))
    collector = PipelineCollector(
        client,
        partitions.keys(0),
        settings.lake.root,
        partitions,
        lambda prefix: connect(settings.redis, settings.redis_dir, prefix),
    )
    metrics.REGISTRY.register(collector)
    if metrics.serve(settings.metrics.host, port, "writer_metrics", settings.data_dir):
        metrics.WRITER_UP.set(1)
    _serving.add(port)
