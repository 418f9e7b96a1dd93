"""The DataWriter: drains the Redis streams into the Parquet lake, exactly once.

One batch of one type at a time (about ``writer.batch_events`` events): read (own
pending, claimed, new) -> per chunk of ``writer.chunk_bytes`` of events: decode, rows
(lake/rows.py), held per partition until a row group (``lake.row_group_rows`` rows or
``lake.row_group_bytes``), which a
background thread encodes into the partition's temp file while the next rows are built
-> finish (footer, fsync) -> publish (replace earlier attempts,
rename, fsync dir) -> commit (one atomic script: XACK + XDEL + dead letters + event
counts) -> trim. A crash anywhere before the commit leaves the entries pending; the next
run rewrites their rows and removes what the crashed attempt published (lake/writer.py),
so the lake never holds an event twice. A crash after the commit loses nothing: the
files were durable first.

Memory is bounded by the batch's compressed entries (released as they are decoded), one
chunk's rows and at most two row groups (one held, one being encoded), so a backlog of
any size drains in the same footprint; the measured peak RSS per setting is in
docs/BENCHMARKS.md.

Guarantees beyond that:
- One DataWriter per key prefix, whichever way it runs (``write --once``, ``write
  --loop``, the Prefect flow): a lease (buffer/lease.py), renewed by a heartbeat. A
  second writer waits or refuses, naming the owner. The lease is a fence: the publish
  step holds the lake's publish lock from a lease check to the fenced commit, so a writer
  that stalled past its lease (SIGSTOP, a pause) commits nothing and retracts what it
  published; the new owner takes over its pending entries at once.
- A file is published only once its footer reads back with every row (lake/writer.py).
- The buffer may forget (pipeline/forgetting.py): each batch first compares Redis's
  record of the type's last commit with the lake ledger's, and the commit carries the
  ledger's, refused (FORGOT) when Redis's is behind; the lake then drops replayed copies
  of what it already holds.
- One bad event costs only itself (pipeline/conversion.py): an entry that cannot be
  decoded, and each event that is not usable, go to the dead-letter stream with the
  reason, in the batch's commit; they never block, and never take their neighbours along.
- A lake write that fails fails the type's run with the path and cause; nothing of the
  batch is acknowledged, the next run retries it.

``drain_once`` and ``drain_type`` are what the CLI, the loop and Prefect's tasks call.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from skybuffer import metrics
from skybuffer.buffer.consumer import Commit, ReadBatch, StreamConsumer
from skybuffer.buffer.deadletter import DeadLetter
from skybuffer.buffer.lease import Lease
from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.stream_ids import id_key
from skybuffer.constants import TYPES, Keys
from skybuffer.errors import (
    BufferForgot,
    ConfigError,
    LakeWriteError,
    LeaseHeld,
    LeaseLost,
)
from skybuffer.lake.erasures import Erasures
from skybuffer.lake.extraction import SqlRowBuilder
from skybuffer.lake.ledger import Ledger
from skybuffer.lake.rows import RowBuilder
from skybuffer.lake.staging import StagedBatch, withhold_staged
from skybuffer.lake.writer import LakeWriter, PartFile, WrittenFile
from skybuffer.observability import writer_stats
from skybuffer.pipeline.conversion import Converter
from skybuffer.pipeline.drain_result import DrainResult, TypeResult, record_batch
from skybuffer.pipeline.faults import Faults
from skybuffer.pipeline.forgetting import Forgetting
from skybuffer.settings import LakeSettings, Settings, WriterSettings

log = logging.getLogger(__name__)


class DataWriter:
    """Drains the streams of one key prefix into one lake, as one named consumer.

    Building and owning first; then draining (``drain_once``, ``drain_type``) and its
    steps down to one batch: stage, publish, fenced commit, ledger."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        writer: WriterSettings,
        lake: LakeSettings,
        lease_token: str = "",
        partition: str = "",
    ) -> None:
        """``partition``: the buffer partition ``keys`` belong to ("p1"; "" unpartitioned):
        its lake files and ledger are its own, and other partitions' writers work beside
        it (buffer/partitions.py, pipeline/writers.py)."""
        self.faults = Faults(writer.fault)
        self.partition = partition
        self.settings = writer
        self.client = client
        self.keys = keys
        name = writer.consumer or f"writer-{socket.gethostname()}-{os.getpid()}"
        name += f".{partition}" if partition else ""
        hint = "it is draining this buffer; wait for it (--wait) or stop it"
        what = f"DataWriter {name}"
        self.lease = Lease(client, keys.writer_lease, writer.lease_seconds, what, hint)
        self._adopted = bool(lease_token)
        """Holds a lease its caller took (a flow run's): never releases it."""
        if lease_token:
            self.lease.token, self.lease.held = lease_token, True
        self.consumer = StreamConsumer(
            client, keys, name, writer.read_count, writer.claim_idle_seconds, lease=self.lease
        )
        self.lake = LakeWriter(
            lake, name, writer.claim_idle_seconds, exclusive=not partition, partition=partition
        )
        self.ledger = Ledger(self.lake.layout.root, partition) if self.lake.local else None
        self.erasures = Erasures(self.lake.layout.root) if self.lake.local else None
        """Accounts the lake must not hold (`lake forget`); an object-store lake has none."""
        self.forgetting = Forgetting(
            self.client,
            self.keys,
            self.consumer,
            self.lake,
            self.ledger,
            writer.replay_guard_seconds,
        )
        threads = writer.duckdb_threads
        rows = SqlRowBuilder(threads) if writer.converter == "duckdb" else RowBuilder(threads)
        self.converter = Converter(keys.stream, rows)
        self.chunk_bytes = writer.chunk_bytes

    @classmethod
    def from_settings(
        cls, settings: Settings, lease_token: str = "", partition: int = 0
    ) -> DataWriter:
        """``lease_token``: the lease a caller already holds (a Prefect flow run's tasks);
        ``partition``: which partition of a partitioned buffer."""
        from skybuffer.buffer.topology import connect

        partitions = Partitions.of_settings(settings.redis)
        keys = partitions.keys(partition)
        client = connect(settings.redis, settings.redis_dir, keys.prefix)
        tag = partitions.name(partition)
        return cls(client, keys, settings.writer, settings.lake, lease_token, tag)

    def close(self) -> None:
        if not self._adopted:
            self.lease.release()
        self.converter.close()

    @property
    def longest_run(self) -> float:
        """How long a waiting writer waits: as long as a scheduled run may take."""
        return self.settings.budget_seconds + self.settings.lease_seconds

    @contextmanager
    def owning(self, wait: bool, stop: threading.Event | None = None) -> Iterator[None]:
        """Hold the DataWriter lease meanwhile: wait for it as long as a scheduled run may
        take (then, or at once if not ``wait``, raise LeaseHeld naming the owner)."""
        if self.lease.held:
            yield
            return
        self.lease.acquire(wait, stop, timeout=self.longest_run)
        try:
            yield
        finally:
            self.lease.release()

    def drain_once(self, types: Iterable[str] | None = None) -> DrainResult:
        """Drain what each type has buffered now; a failing type does not stop the rest."""
        started = time.monotonic()
        deadline = started + self.settings.budget_seconds
        result = DrainResult()
        try:
            for type_ in types or TYPES:
                result.types[type_] = TypeResult(type_)
                try:
                    self._drain(type_, deadline, result.types[type_])
                except LakeWriteError as exc:
                    result.types[type_].error = str(exc)
                    log.error("%s: %s", type_, exc)
        finally:
            result.seconds = time.monotonic() - started
            self._remember(writer_stats.record_run, result.outcome, result.seconds)
        return result

    def drain_type(self, type_: str, deadline: float | None = None) -> TypeResult:
        """Drain one type (what Prefect runs per task); raises if a batch fails."""
        result = TypeResult(type_)
        self._drain(type_, deadline, result)
        return result

    def _drain(self, type_: str, deadline: float | None, result: TypeResult) -> None:
        if type_ not in TYPES:
            raise ConfigError(f"unknown type {type_!r}; choose from {', '.join(TYPES)}")
        if not self.lease.held:  # a DataWriter used directly holds it until close()
            self.lease.acquire(wait=True, timeout=self.longest_run)
        started = time.monotonic()
        try:
            self._drain_batches(type_, self.consumer.last_id(type_), deadline, result)
            self.consumer.forget_idle_consumers(type_)  # what they held is ours now
        finally:
            result.seconds = time.monotonic() - started

    def _drain_batches(
        self, type_: str, until: str, deadline: float | None, result: TypeResult
    ) -> None:
        read_new = True
        while True:
            if deadline is not None and time.monotonic() > deadline:
                result.budget_exhausted = True
                log.warning(
                    "%s: budget of %.0fs used up; the rest waits for the next run.",
                    type_,
                    self.settings.budget_seconds,
                )
                return
            self.forgetting.notice(type_)
            batch = self.consumer.read_batch(type_, self.settings.batch_events, until, read_new)
            if not batch.entries:
                return
            read_new = not batch.caught_up
            try:
                self._write_batch(batch, result)
            except BufferForgot as exc:  # noticed at commit: the next read sees what is left
                log.error("%s; the batch is written again from what Redis holds now.", exc)
                continue
            except LeaseLost as exc:
                log.error("%s: %s; the batch is abandoned uncommitted.", type_, exc)
                if not self.lease.reclaim():
                    raise
                read_new = True  # start over from what the buffer says now

    def _write_batch(self, batch: ReadBatch, result: TypeResult) -> None:
        """Stage, publish and commit one batch; one that fails gives back to the replay
        guard what it dropped, so its next attempt drops it again (no duplicates)."""
        try:
            self._stage_publish_commit(batch, result)
        except BaseException:
            self.forgetting.abandon(batch.type)
            raise

    def _stage_publish_commit(self, batch: ReadBatch, result: TypeResult) -> None:
        began = time.monotonic()
        generation = self.erasures.refresh() if self.erasures else 0
        parts, dead = self._stage(batch)
        with self.lake.publishing():
            if self.erasures and self.erasures.changed_since(generation):
                # An erasure recorded since staging (under this lock: lake/erasures.py)
                # may name an account in these rows: the staged files lose them first.
                parts = withhold_staged(self.lake, parts, self.erasures)
            commit, files = self._publish_and_commit(batch, parts, dead)
        result.replayed += self.forgetting.save(batch.type)
        self.faults.at("before_trim")
        result.add(files, commit, self.consumer.trim(batch.type))
        record_batch(batch, files, dead, commit.deadletters, time.monotonic() - began)
        written = (sum(f.rows for f in files), sum(f.bytes for f in files), len(files))
        self._remember(writer_stats.record_batch, batch.type, *written)

    def _stage(self, batch: ReadBatch) -> tuple[list[PartFile], dict[str, list[DeadLetter]]]:
        """The batch's rows in temp files, less replayed copies and forgotten accounts;
        its dead letters."""
        dead: dict[str, list[DeadLetter]] = {}
        staged = StagedBatch(self.lake, batch.type, batch.ids[0])
        try:
            chunks = self.converter.convert_chunks(batch.type, batch.entries, self.chunk_bytes)
            for converted in chunks:
                for entry_id, letters in converted.dead.items():
                    dead.setdefault(entry_id, []).extend(letters)
                rows = converted.rows
                if rows is not None and rows.table.num_rows:
                    table, hours, _ = self.forgetting.unreplayed(batch.type, rows)
                    if self.erasures:
                        table, hours = self.erasures.withhold(table, hours)
                    staged.append(table, hours)
                del rows, converted
            return staged.finish(), dead
        except LakeWriteError as exc:
            staged.abort()
            if not self.lease.renew():  # the new owner removed this stale writer's temps
                raise LeaseLost(f"{self.lease.what} lost its lease {self.lease.key}") from exc
            raise
        except BaseException:
            staged.abort()
            raise

    def _remember(self, record: Callable[..., None], *args: Any) -> None:
        writer_stats.remember(self.client, self.keys, record, *args)

    def _publish_and_commit(
        self, batch: ReadBatch, parts: list[PartFile], dead: dict[str, list[DeadLetter]]
    ) -> tuple[Commit, list[WrittenFile]]:
        """Lease check, publish, fenced commit, ledger: the step the publish lock covers."""
        try:
            self.lease.check()
        except LeaseLost:
            self.lake.discard(parts)
            raise
        last = max(batch.ids, key=id_key)
        self._ledger_record(batch.type, "published", last)
        files = self.lake.publish(parts, set(batch.ids), self.faults.after_first_file(len(parts)))
        self.faults.at("before_ack")
        lake_last = self.ledger.last(batch.type, "committed") if self.ledger else ""
        try:
            commit = self.consumer.commit(batch.type, batch.entries, dead, lake_last=lake_last)
        except LeaseLost:
            self.lake.retract(files)
            raise
        self._ledger_record(batch.type, "committed", last)
        return commit, files

    def _ledger_record(self, type_: str, what: str, entry_id: str) -> None:
        if self.ledger is None:
            return
        try:
            self.ledger.record(type_, what, entry_id)
        except OSError as exc:
            raise LakeWriteError(
                f"cannot record the lake ledger {self.ledger.path}: {exc}"
            ) from exc


@contextmanager
def _writer(target: Settings | DataWriter) -> Iterator[DataWriter]:
    """The given DataWriter, or one built from settings and closed afterwards."""
    if isinstance(target, DataWriter):
        yield target
        return
    writer = DataWriter.from_settings(target)
    try:
        yield writer
    finally:
        writer.close()


def drain_once(
    target: Settings | DataWriter, types: Iterable[str] | None = None, wait: bool = True
) -> DrainResult:
    """Drain every type (or ``types``) once, holding the DataWriter lease (waiting for
    it, or raising LeaseHeld when ``wait`` is false)."""
    with _writer(target) as writer, writer.owning(wait):
        return writer.drain_once(types)


def drain_type(target: Settings | DataWriter, type_: str, wait: bool = True) -> TypeResult:
    """Drain one type under the lease; raises LakeWriteError when a batch fails."""
    with _writer(target) as writer, writer.owning(wait):
        return writer.drain_type(type_)


def run_loop(
    settings: Settings,
    interval: float,
    stop: threading.Event,
    on_result: Callable[[DrainResult], None] | None = None,
) -> None:
    """Drain every ``interval`` seconds until ``stop``. An unreachable Redis, or one that
    cannot write its AOF (a full disk: it refuses the commits), is retried at the next
    interval with one log line; nothing was acknowledged, so the retry rewrites the same
    files and loses nothing."""
    from skybuffer.errors import BufferFull, RedisUnavailable
    from skybuffer.observability.exporter import serve_writer_metrics

    writer = DataWriter.from_settings(settings)
    serve_writer_metrics(settings)
    try:
        while not stop.is_set():
            try:
                if not writer.lease.held:
                    writer.lease.acquire(wait=True, stop=stop)
                result = writer.drain_once()
                if on_result is not None:
                    on_result(result)
            except RedisUnavailable as exc:
                log.warning("Redis unavailable (%s); retrying in %.0fs.", exc, interval)
            except BufferFull as exc:
                log.warning("%s; retrying in %.0fs.", exc, interval)
            except LeaseLost as exc:
                log.error("%s; waiting to own the DataWriter again.", exc)
            except LeaseHeld:
                return  # stopped while waiting
            stop.wait(interval)
    finally:
        writer.lease.release()
        writer.close()
        metrics.WRITER_UP.set(0)
