"""`skybuffer chaos forget`: Redis forgets its last seconds mid-run; nothing is lost or doubled.

On a scratch data dir, the real pipeline runs: an ingester (with its lease) reads a file
of synthetic events, either straight from the file (``replay``) or through the local
Jetstream-protocol server (``jetstream``: cursor, websocket, the overlap window), and a
DataWriter drains every half second into a scratch lake. Mid-run the Redis server is
killed with SIGKILL and its AOF cut back to its size ``forget_seconds`` earlier — what a
host crash under ``appendfsync everysec`` leaves, or a failover to a replica that lagged
— and started again. The cut is taken only once the DataWriter has committed entries
written after it, so the lake already holds events that Redis then forgets: the hard
case. The run goes on until every source event is confirmed and drained.

Then every event is counted by identity: ``lost`` = source events not in the lake once,
``duplicated`` = extra copies; ``forgotten`` = events Redis had confirmed and lost (the
ingester's count), ``replayed`` = copies the lake dropped because it already held them,
``recovery_seconds`` = from the kill until the ingester was back where it had been.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from skybuffer import processes
from skybuffer.buffer.lease import Lease
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.server import ManagedRedis, free_port
from skybuffer.buffer.spool import Spool
from skybuffer.constants import TYPES, Keys
from skybuffer.errors import RedisUnavailable
from skybuffer.events import identity
from skybuffer.ops.chaos.restart import incr_file
from skybuffer.ops.harness import START_US, conf_variant
from skybuffer.ops.report import Report, Table
from skybuffer.pipeline.datawriter import DataWriter
from skybuffer.pipeline.ingest import Ingester
from skybuffer.settings import Settings, load_settings
from skybuffer.sources.base import Source, SourceBatch
from skybuffer.testbed.generator import generate

SOURCES = ("jetstream", "replay")
GATE_AT = 0.7
"""The source waits at this share of its events until Redis is back (see GatedSource)."""
DEADLINE_SECONDS = 600.0
"""Bounds a hang only: a run that has not finished by then is reported as failed."""


def run_chaos_forget(
    settings: Settings,
    events: int = 60_000,
    rate: float = 4_000.0,
    forget_seconds: float = 1.0,
    sources: tuple[str, ...] = SOURCES,
    restore: bool = False,
) -> Report:
    """One forgetting run per source, each on its own scratch data dir."""
    results = {s: forget_once(settings, s, events, rate, forget_seconds, restore) for s in sources}
    return _report(results, events, rate, forget_seconds, restore).write(settings.reports_dir)


def forget_once(
    base: Settings,
    source: str,
    events: int,
    rate: float,
    forget_seconds: float,
    restore: bool = False,
) -> dict[str, Any]:
    """One run. ``restore``: Redis comes back from a copy of its whole AOF directory
    taken ``forget_seconds`` before the kill (a restored older snapshot), instead of its
    AOF cut back to its size then (a host crash)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    with tempfile.TemporaryDirectory(prefix="skybuffer-forget-") as scratch:
        run = Run(base, Path(scratch), source, events, rate, forget_seconds, restore)
        return run.execute()


class Run:
    """One pipeline on a scratch data dir, and the fault in the middle of it."""

    def __init__(
        self,
        base: Settings,
        scratch: Path,
        source: str,
        events: int,
        rate: float,
        forget_seconds: float,
        restore: bool = False,
    ) -> None:
        self.kind, self.events, self.rate = source, events, rate
        self.forget_seconds, self.restore = forget_seconds, restore
        self.snapshot = scratch / "snapshot"
        self.file = scratch / "events.jsonl"
        self.lines = generate(23, events, START_US)
        self.file.write_bytes(b"\n".join(self.lines) + b"\n")
        conf = conf_variant(base.redis.conf, scratch / "conf", {"auto-aof-rewrite-percentage": "0"})
        self.settings = load_settings(
            data_dir=scratch / "var",
            redis={"port": free_port(), "conf": conf, "url": None},
            metrics={"ingest_port": 0, "writer_port": 0},
            writer={"batch_events": 5_000, "lease_seconds": 5},
            ingest={"batch_events": 500, "linger_seconds": 0.05, "lease_seconds": 5},
        )
        self.server = ManagedRedis(self.settings.redis, self.settings.redis_dir)
        self.reopened = threading.Event()
        self.replayed = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def execute(self) -> dict[str, Any]:
        self.server.start()
        replay_server = None
        try:
            if self.kind == "jetstream":
                replay_server = _start_replay_server(self.file, self.rate)
            ingester = self._ingester(replay_server.url if replay_server else None)
            threads = [
                threading.Thread(target=self._guarded, args=(ingester.run, self.stop), daemon=True),
                threading.Thread(target=self._guarded, args=(self._drain_loop,), daemon=True),
            ]
            for thread in threads:
                thread.start()
            fault = self._forget_mid_run(ingester)
            self._wait_until_done(ingester)
            self.stop.set()
            for thread in threads:
                thread.join(timeout=60)
            return {**fault, **self._count(ingester)}
        finally:
            self.stop.set()
            if replay_server is not None:
                replay_server.stop()
            self.server.stop(timeout=30)

    # --- the pipeline ------------------------------------------------------------------------
    def _ingester(self, url: str | None) -> Ingester:
        from skybuffer.sources import open_source

        s = self.settings
        client = self.server.client()
        source = open_source(
            "jetstream" if url else "replay",
            rate=0.0 if url else self.rate,
            seed=0,
            file=None if url else self.file,
            url=url,
            collections=[],
            jetstream=s.jetstream,
        )
        source = GatedSource(source, int(self.events * GATE_AT), self.reopened)
        keys = Keys(s.redis.prefix)
        lease = Lease(client, keys.ingest_lease(source.name), 5, "chaos forget ingester")
        producer = Producer(client, keys, source.name, lease)
        assert s.ingest.spool_dir is not None
        return Ingester(producer, source, s.ingest, Spool(s.ingest.spool_dir, source.name))

    def _drain_loop(self) -> None:
        writer = DataWriter.from_settings(self.settings)
        try:
            while not self.stop.is_set():
                try:
                    with writer.owning(wait=True, stop=self.stop):
                        result = writer.drain_once()
                    self.replayed += sum(r.replayed for r in result.types.values())
                except RedisUnavailable:
                    pass  # Redis is being restarted: the next round retries
                self.stop.wait(0.5)
        finally:
            writer.close()

    def _guarded(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.errors.append(exc)
            self.stop.set()

    # --- the fault ---------------------------------------------------------------------------
    def _forget_mid_run(self, ingester: Ingester) -> dict[str, Any]:
        """Mark the AOF, let the DataWriter commit past the mark, kill, cut, restart."""
        admin = self.server.client("admin")
        aof_dir = self.server.directory / "appendonlydir"
        aof = incr_file(aof_dir)
        self._wait(lambda: ingester.stats.events >= self.events * 0.3, "30% ingested")
        mark_size, marked_at = aof.stat().st_size, time.monotonic()
        if self.restore:
            shutil.copytree(aof_dir, self.snapshot)  # the "older snapshot" (no fsync needed)
        marks = {t: _last_id(admin, self.settings, t) for t in TYPES}
        self._wait(lambda: self._committed_past(admin, marks), "the writer past the mark")
        self._wait(lambda: time.monotonic() - marked_at >= self.forget_seconds, "the window")
        ingested_at_kill = ingester.stats.events + ingester.stats.forgotten
        pid = self.server.pid()
        assert pid is not None, "the scratch redis-server has no pid"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        processes.wait_gone(pid, timeout=10)
        cut = aof.stat().st_size - mark_size
        if self.restore:
            shutil.rmtree(aof_dir)
            shutil.copytree(self.snapshot, aof_dir)
        else:
            os.truncate(aof, mark_size)
        self.server.start()
        self.reopened.set()
        self._wait(lambda: ingester.stats.rewinds > 0, "the ingester to notice")
        self._wait(lambda: _confirmed(ingester) >= ingested_at_kill, "the ingester to recover")
        return {
            "forget_seconds": round(killed_at - marked_at, 2),
            "aof_bytes_cut": cut,
            "recovery_seconds": round(time.monotonic() - killed_at, 2),
        }

    def _committed_past(self, admin: Any, marks: dict[str, str]) -> bool:
        from skybuffer.buffer.consumer import id_key

        committed = admin.hgetall(Keys(self.settings.redis.prefix).writer_committed)
        done = {k.decode(): v.decode() for k, v in committed.items()}
        return any(
            mark != "0-0" and t in done and id_key(done[t]) > id_key(mark)
            for t, mark in marks.items()
        )

    def _wait_until_done(self, ingester: Ingester) -> None:
        """Every source event confirmed (by the durable cursor) and drained."""
        admin = self.server.client("admin")
        keys = Keys(self.settings.redis.prefix)
        self._wait(lambda: _confirmed(ingester) >= self.events, "every event ingested")
        self._wait(
            lambda: sum(int(v) for v in admin.hgetall(keys.event_counts).values()) == 0,
            "the buffer drained",
        )

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not condition():
            if self.errors:
                raise RuntimeError(f"waiting for {what}: {self.errors[0]!r}") from self.errors[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"chaos forget: gave up waiting for {what}")
            time.sleep(0.02)

    # --- counting ------------------------------------------------------------------------
    def _count(self, ingester: Ingester) -> dict[str, Any]:
        source = Counter(identity(orjson.loads(line)) for line in self.lines)
        lake = lake_identities(Path(str(self.settings.lake.root)))
        lost = sum((source - lake).values())
        duplicated = sum((lake - source).values())
        return {
            "events": self.events,
            "lake_rows": sum(lake.values()),
            "lost": lost,
            "duplicated": duplicated,
            "forgotten": ingester.stats.forgotten,
            "rewinds": ingester.stats.rewinds,
            "replayed": self.replayed,
        }


class GatedSource:
    """Holds its source back at ``at`` events until ``gate`` opens, so that Redis forgets
    while the ingester still has events to read: one that had finished would never
    write again, so never notice (its next start simply resumes from the cursor)."""

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


def _confirmed(ingester: Ingester) -> int:
    """Source events Redis holds now by the durable cursor (what survives a forget)."""
    try:
        return ingester.producer.checkpoint().events
    except RedisUnavailable:
        return -1


def _last_id(admin: Any, settings: Settings, type_: str) -> str:
    info = admin.xinfo_stream(Keys(settings.redis.prefix).stream(type_))
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else last


def _start_replay_server(path: Path, rate: float) -> Any:
    from skybuffer.testbed.replay_server import EventFile, ReplayServer, ServerThread

    return ServerThread(ReplayServer(EventFile.load(path), rate=rate)).start()


def _report(
    results: dict[str, dict[str, Any]],
    events: int,
    rate: float,
    forget_seconds: float,
    restore: bool,
) -> Report:
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 for r in results.values())
    rows = [{"source": s, **r} for s, r in results.items()]
    notes = [
        "lost and duplicated count source events by identity (did, collection, rkey, "
        "time_us) against the lake's rows; both must be 0.",
        "forgotten: events Redis had confirmed to the ingester and lost in the cut; the "
        "ingester rewound its source to the durable cursor and read them again.",
        "replayed: copies of events the lake already held (the DataWriter had committed "
        "them before Redis forgot) that the lake's replay guard dropped.",
        "recovery_seconds: from the SIGKILL until the durable cursor was back where it had "
        "been (restart, AOF load, rewind, re-read).",
    ]
    data = {
        "params": {
            "events": events,
            "rate": rate,
            "forget_seconds": forget_seconds,
            "how": "older AOF restored" if restore else "AOF cut back (host crash)",
        },
        "results": results,
        "ok": ok,
    }
    title = "skybuffer chaos forget: Redis forgets its last seconds mid-run"
    return Report(
        command="chaos-forget",
        title=title,
        data=data,
        tables=[Table("chaos forget", rows)],
        notes=notes,
        exit_code=0 if ok else 1,
    )
