"""Draining a partitioned buffer: one DataWriter per partition, each under its own lease.

Each partition (buffer/partitions.py) has its own streams, consumer group, writer lease,
lake file names and ledger, so a partition's DataWriter is the single-partition one
(pipeline/datawriter.py) with every guarantee it proves. What this module adds is who
drains which partition:

- in one process, the partitions whose lease it holds or can take now are drained in
  parallel, ``writer.partition_threads`` at a time (DuckDB, Parquet encoding, zstd and
  the Redis socket release the GIL; each thread's memory is one DataWriter's, so the
  default stays at 2 on a 2-core machine);
- several processes (`skybuffer write --loop` on one or many hosts, or the Prefect flow
  beside a `write --loop`) split the partitions between them by their leases: a partition
  another process drains is skipped, and one whose writer died is taken over once its
  lease expires (``writer.lease_seconds``).

Why leases per partition and not one Prefect task per partition only: a lease is what
fences a stalled writer out of its commits (guarantee 7), and it is the same mechanism
whether the partitions are drained by a flow's tasks, a loop, or several hosts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

from skybuffer.buffer.partitions import Partitions
from skybuffer.errors import BufferFull, LeaseHeld, LeaseLost, RedisUnavailable
from skybuffer.pipeline import datawriter
from skybuffer.pipeline.datawriter import DataWriter
from skybuffer.pipeline.drain_result import DrainResult, TypeResult
from skybuffer.settings import Settings

log = logging.getLogger(__name__)


class Writers:
    """The DataWriters of every partition of a data dir's buffer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partitions = Partitions.of_settings(settings.redis)
        self.writers = [
            DataWriter.from_settings(settings, partition=p) for p in range(self.partitions.count)
        ]
        for writer in self.writers:
            self.partitions.refuse_stranded(writer.client)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    def owned(self, wait: bool, stop: threading.Event | None = None) -> list[DataWriter]:
        """The writers whose partition lease this process holds, taking each free one
        (with ``wait``: waiting for each as long as a run may take, else skipping those
        another process holds)."""
        mine = []
        for writer in self.writers:
            if not writer.lease.held:
                try:
                    writer.lease.acquire(wait, stop, timeout=writer.longest_run)
                except LeaseHeld as exc:
                    log.info("Partition %s: %s", writer.partition or "-", exc)
                    continue
                except (RedisUnavailable, BufferFull) as exc:
                    log.warning("Partition %s skipped this round: %s", writer.partition, exc)
                    continue
            mine.append(writer)
        return mine

    def drain_once(
        self, types: Iterable[str] | None = None, wait: bool = False
    ) -> tuple[DrainResult, list[str]]:
        """Drain the partitions this process can own now, in parallel; the merged result
        and the partitions drained."""
        mine = self.owned(wait)
        started = time.monotonic()
        chosen = list(types) if types is not None else None
        threads = max(1, min(self.settings.writer.partition_threads, len(mine) or 1))
        with ThreadPoolExecutor(threads, thread_name_prefix="drain") as pool:
            results = list(pool.map(lambda w: _drain(w, chosen), mine))
        merged = merge(results)
        merged.seconds = time.monotonic() - started
        return merged, [w.partition for w in mine]

    def release(self) -> None:
        for writer in self.writers:
            writer.lease.release()


def _drain(writer: DataWriter, types: list[str] | None) -> DrainResult:
    """One partition's drain; a partition whose Redis is away (its primary failing over)
    or whose lease was lost is logged and retried next round, the others go on."""
    try:
        return writer.drain_once(types)
    except (RedisUnavailable, BufferFull) as exc:
        log.warning("Partition %s: %s; retried at the next round.", writer.partition, exc)
    except LeaseLost as exc:
        writer.lease.held = False
        log.error("Partition %s: %s", writer.partition, exc)
    return DrainResult()


def merge(results: list[DrainResult]) -> DrainResult:
    """Several partitions' drains as one: per type, the sums (and any error)."""
    merged = DrainResult()
    for result in results:
        for type_, one in result.types.items():
            into = merged.types.setdefault(type_, TypeResult(type_))
            for field in fields(TypeResult):
                name = field.name
                value = getattr(one, name)
                if name == "partitions":
                    into.partitions = sorted({*into.partitions, *value})
                elif name == "budget_exhausted":
                    into.budget_exhausted |= value
                elif name == "error":
                    into.error = into.error or value
                elif name != "type":
                    setattr(into, name, getattr(into, name) + value)
    return merged


def drain_partitions(
    settings: Settings, types: Iterable[str] | None = None, wait: bool = True
) -> DrainResult:
    """`write --once` of a partitioned buffer: every partition this process can own."""
    writers = Writers(settings)
    try:
        result, drained = writers.drain_once(types, wait)
        if not drained:
            raise LeaseHeld("every partition is being drained by another DataWriter")
        return result
    finally:
        writers.release()
        writers.close()


def run_partitions_loop(
    settings: Settings,
    interval: float,
    stop: threading.Event,
    on_result: Callable[[DrainResult], None] | None = None,
) -> None:
    """`write --loop` of a partitioned buffer: every ``interval``, drain the partitions
    this process owns or can take (an expired lease of a dead writer included)."""
    from skybuffer.observability.exporter import serve_writer_metrics

    writers = Writers(settings)
    serve_writer_metrics(settings)
    try:
        while not stop.is_set():
            try:
                result, drained = writers.drain_once(wait=False)
                if drained and on_result is not None:
                    on_result(result)
            except (RedisUnavailable, BufferFull) as exc:
                log.warning("%s; retrying in %.0fs.", exc, interval)
            except LeaseLost as exc:
                log.error("%s; taking the partition again when it is free.", exc)
            stop.wait(interval)
    finally:
        writers.release()
        writers.close()


def drain_once(
    settings: Settings, types: Iterable[str] | None = None, wait: bool = True
) -> DrainResult:
    """`write --once`: the one DataWriter, or every partition this process can own."""
    if Partitions.of_settings(settings.redis).partitioned:
        return drain_partitions(settings, types, wait)
    return datawriter.drain_once(settings, types, wait)


def run_loop(
    settings: Settings,
    interval: float,
    stop: threading.Event,
    on_result: Callable[[DrainResult], None] | None = None,
) -> None:
    """`write --loop`: the one DataWriter's loop, or the partitions' (above)."""
    if Partitions.of_settings(settings.redis).partitioned:
        run_partitions_loop(settings, interval, stop, on_result)
    else:
        datawriter.run_loop(settings, interval, stop, on_result)
