"""Ingest into a partitioned buffer: one lane per partition.

A lane is a whole Ingester (pipeline/ingest.py) over one partition's keys: its own
cursor, batch numbers, lease, spool and backpressure, reading its own view of the source
(``PartitionView``: the source's batches and positions, only the partition's events).
Every guarantee of the single-partition ingester therefore holds per partition as it is
proven there — a batch lands whole with its cursor, a kill -9 resumes exactly, a
partition whose Redis forgot (a failed-over primary whose replica lagged) rewinds only
its own lane — and no transaction ever spans two partitions (Redis Cluster slots).

Why a source connection per lane and not one connection split P ways: with one reader,
a crash between the P transactions of a batch leaves the partitions at different
positions, so a resume from the oldest must recognise, per partition, events it already
has — an identity window per partition, committed with it. P readers of the same
firehose cost P times its wire bytes (Jetstream's full stream is ~0.3–0.6 MB/s
compressed) and each lane parses only the DID of the events it skips; in exchange the
lanes are independent, a lane can run in its own process or on its own host, and
nothing new has to be proven. Jetstream has no server-side DID sharding to avoid the
extra bytes (its filters are by collection and by a DID list).

Counting: with partitions, ``--count N`` ends the (synthetic) source at its N-th event,
for every lane: the lanes together buffer the source's first N events once, valid or not
(a second counted run on the same buffer adds nothing). The jetstream and replay sources
run until stopped or until their file ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import fields

from skybuffer.buffer.partitions import Partitions
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.tally import IngestStats
from skybuffer.sources.base import Source, SourceBatch


class PartitionView:
    """One partition's share of a source: the source's positions, only its events.
    Events the source could not frame (no DID to route them by) go to partition 0."""

    def __init__(self, source: Source, partitions: Partitions, partition: int) -> None:
        self.inner = source
        self.name = source.name
        self.partitions = partitions
        self.partition = partition

    def resume(self, position: str | None) -> None:
        self.inner.resume(position)

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        of, mine = self.partitions.of, self.partition
        for batch in self.inner.batches(max_events, linger_seconds):
            events = [raw for raw in batch.events if of(raw) == mine]
            rejects = batch.rejects if mine == 0 else []
            yield SourceBatch(events, batch.position, rejects)

    def close(self) -> None:
        self.inner.close()


class Lanes:
    """The lanes of a partitioned ingest, run on one thread each; ``run`` returns when
    every lane has (one failing stops the others, and its error is raised)."""

    def __init__(self, lanes: list[Ingester]) -> None:
        self.lanes = lanes

    @property
    def stats(self) -> IngestStats:
        """The lanes' figures added up (a new object each time)."""
        total = IngestStats()
        for lane in self.lanes:
            for field in fields(IngestStats):
                if field.name == "started":
                    continue
                value = getattr(lane.stats, field.name)
                setattr(total, field.name, getattr(total, field.name) + value)
        total.started = min((lane.stats.started for lane in self.lanes), default=total.started)
        return total

    def run(self, stop: threading.Event | None = None) -> IngestStats:
        stop = stop or threading.Event()
        errors: list[BaseException] = []

        def lane_run(lane: Ingester) -> None:
            try:
                lane.run(stop)
            except BaseException as exc:  # noqa: BLE001 - raised below, in the caller
                errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=lane_run, args=(lane,), name=f"ingest-p{i}", daemon=True)
            for i, lane in enumerate(self.lanes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return self.stats


def combined(on_batch: Callable[[IngestStats], None] | None, lanes: Lanes) -> Callable[..., None]:
    """A lane's per-batch callback that reports the lanes' total."""

    def report(_: IngestStats) -> None:
        if on_batch is not None:
            on_batch(lanes.stats)

    return report
