"""`skybuffer chaos failover --mode sentinel`: the primary is killed mid-run, a replica is
promoted, and every event still reaches the lake exactly once.

On a scratch data dir, a local sentinel topology (buffer/sentinel.py: primary, replica,
three sentinels) holds the buffer, and the real pipeline runs against it through the
sentinels: an ingester (with its lease) reading synthetic events through the local
Jetstream-protocol server (``jetstream``) or straight from the file (``replay``), and a
DataWriter draining every half second into a scratch lake. Once the writer has committed
part of the run, the primary gets SIGKILL. Nobody restarts it: the sentinels promote the
replica, the pipeline's clients find it by themselves, and whatever the replica had not
received yet is a Redis that forgot (the cursor's batch check, the ledger). The run goes
on until every source event is confirmed and drained.

Counted by event identity, as `chaos forget` does: ``lost`` = source events not in the
lake once, ``duplicated`` = extra copies; ``failovers`` = primaries the sentinels named
after the first; ``promotion_seconds`` = kill -> a new primary takes commands;
``recovery_seconds`` = kill -> the ingester's batches land again.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis

from skybuffer import processes
from skybuffer.buffer.lease import Lease
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.sentinel import SentinelTopology, wait_for_new_primary
from skybuffer.buffer.server import free_port
from skybuffer.buffer.spool import Spool
from skybuffer.constants import Keys
from skybuffer.errors import BufferFull, LeaseLost, RedisUnavailable
from skybuffer.events import identity
from skybuffer.ops.chaos.forget import GatedSource, lake_identities
from skybuffer.ops.harness import START_US
from skybuffer.ops.report import Report, Table
from skybuffer.pipeline.datawriter import DataWriter
from skybuffer.pipeline.ingest import Ingester
from skybuffer.settings import Settings, load_settings
from skybuffer.testbed.generator import generate

MODES = ("sentinel",)
SOURCES = ("jetstream", "replay")
KILL_AT = 0.3
"""The primary is killed once this share of the events is confirmed (and some drained)."""
GATE_AT = 0.8
"""The source waits at this share until a new primary serves: the ingester must still
write after the failover, or it would never learn what the promoted replica lacks."""
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
DEADLINE_SECONDS = 300.0
"""Bounds a hang only: a run not finished by then is reported as failed."""


def run_chaos_failover(
    settings: Settings,
    events: int = 40_000,
    rate: float = 3_000.0,
    source: str = "jetstream",
    mode: str = "sentinel",
) -> Report:
    """One failover run on its own scratch data dir, reported and written."""
    result = failover_once(settings, source, events, rate, mode)
    return _report(result, events, rate, source, mode).write(settings.reports_dir)


def failover_once(
    base: Settings, source: str, events: int, rate: float, mode: str = "sentinel"
) -> dict[str, Any]:
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)} (cluster: not yet supported)")
    if source not in SOURCES:
        raise ValueError(f"--source must be one of {', '.join(SOURCES)}")
    with tempfile.TemporaryDirectory(prefix="skybuffer-failover-") as scratch:
        return FailoverRun(base, Path(scratch), source, events, rate).execute()


class FailoverRun:
    """One pipeline on a scratch sentinel topology, and the kill in the middle of it."""

    def __init__(self, base: Settings, scratch: Path, source: str, events: int, rate: float):
        self.kind, self.events, self.rate = source, events, rate
        self.file = scratch / "events.jsonl"
        self.lines = generate(29, events, START_US)
        self.file.write_bytes(b"\n".join(self.lines) + b"\n")
        self.settings = load_settings(
            data_dir=scratch / "var",
            redis={
                "mode": "sentinel",
                "url": None,
                "sentinels": [],
                "port": free_port(),
                "conf": base.redis.conf,
                "sentinel_down_after_ms": 1000,
                "sentinel_failover_timeout_ms": 5000,
                "socket_timeout_seconds": 2.0,
            },
            metrics={"ingest_port": 0, "writer_port": 0},
            writer={"batch_events": 5_000, "lease_seconds": 5},
            ingest={"batch_events": 500, "linger_seconds": 0.05, "lease_seconds": 5},
        )
        self.topology = SentinelTopology(self.settings.redis, self.settings.redis_dir)
        self.promoted = threading.Event()
        self.replayed = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def execute(self) -> dict[str, Any]:
        self.topology.start()
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
            fault = self._kill_primary(ingester)
            self._wait_until_done(ingester)
            self.stop.set()
            for thread in threads:
                thread.join(timeout=60)
            return {**fault, **self._count(ingester)}
        finally:
            self.stop.set()
            if replay_server is not None:
                replay_server.stop()
            self.topology.stop(timeout=30)

    # --- the pipeline ------------------------------------------------------------------------
    def _ingester(self, url: str | None) -> Ingester:
        from skybuffer.sources import open_source

        s = self.settings
        client = self.topology.client()
        source = open_source(
            "jetstream" if url else "replay",
            rate=0.0 if url else self.rate,
            seed=0,
            file=None if url else self.file,
            url=url,
            collections=[],
            jetstream=s.jetstream,
        )
        source = GatedSource(source, int(self.events * GATE_AT), self.promoted)
        keys = Keys(s.redis.prefix)
        lease = Lease(client, keys.ingest_lease(source.name), 5, "chaos failover ingester")
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
                except (RedisUnavailable, BufferFull, LeaseLost):
                    pass  # the primary is being replaced: the next round retries
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
    def _kill_primary(self, ingester: Ingester) -> dict[str, Any]:
        """SIGKILL the primary once the writer committed, time the promotion and the
        ingester's first batch on the new primary."""
        admin = self.topology.client("admin")
        keys = Keys(self.settings.redis.prefix)
        self._wait(lambda: _confirmed(ingester) >= self.events * KILL_AT, "events ingested")
        self._wait(lambda: bool(admin.hgetall(keys.writer_committed)), "a DataWriter commit")
        old = self.topology.primary()
        assert old is not None, "the sentinels name no primary"
        node = next(n for n in self.topology.nodes() if n.port == old[1])
        pid = node.pid()
        assert pid is not None, "the primary has no pid"
        landed_at_kill = _landed(ingester)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        processes.wait_gone(pid, 10)
        new = wait_for_new_primary(self.topology, old, DEADLINE_SECONDS)
        promoted_at = time.monotonic()
        self.promoted.set()
        self._wait(lambda: _landed(ingester) > landed_at_kill, "batches landing again")
        return {
            "old_primary": f"{old[0]}:{old[1]}",
            "new_primary": f"{new[0]}:{new[1]}",
            "failovers": 1 if new != old else 0,
            "promotion_seconds": round(promoted_at - killed_at, 2),
            "recovery_seconds": round(time.monotonic() - killed_at, 2),
        }

    def _wait_until_done(self, ingester: Ingester) -> None:
        """Every source event confirmed (by the durable cursor) and drained."""
        admin = self.topology.client("admin")
        keys = Keys(self.settings.redis.prefix)
        self._wait(lambda: _confirmed(ingester) >= self.events, "every event ingested")
        self._wait(lambda: _buffered(admin, keys) == 0, "the buffer drained")

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not _holds(condition):
            if self.errors:
                raise RuntimeError(f"waiting for {what}: {self.errors[0]!r}") from self.errors[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"chaos failover: gave up waiting for {what}")
            time.sleep(0.02)

    # --- counting ----------------------------------------------------------------------------
    def _count(self, ingester: Ingester) -> dict[str, Any]:
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


def _holds(condition: Any) -> bool:
    """A condition asked of Redis mid-failover is false while Redis cannot answer."""
    try:
        return bool(condition())
    except (RedisUnavailable, BufferFull, *_REDIS_DOWN):
        return False


def _confirmed(ingester: Ingester) -> int:
    """Source events the current primary holds by the durable cursor."""
    return ingester.producer.checkpoint().events


def _landed(ingester: Ingester) -> int:
    """Events the ingester has had confirmed, forgotten ones included: grows only when a
    batch lands."""
    return ingester.stats.events + ingester.stats.forgotten


def _buffered(admin: Any, keys: Keys) -> int:
    return sum(int(v) for v in admin.hgetall(keys.event_counts).values())


def _columns(result: dict[str, Any]) -> dict[str, Any]:
    """The table's columns (the JSON keeps the addresses too)."""
    return {k: v for k, v in result.items() if k not in ("old_primary", "new_primary")}


def _start_replay_server(path: Path, rate: float) -> Any:
    from skybuffer.testbed.event_file import EventFile
    from skybuffer.testbed.replay_server import ReplayServer, ServerThread

    return ServerThread(ReplayServer(EventFile.load(path), rate=rate)).start()


def _report(result: dict[str, Any], events: int, rate: float, source: str, mode: str) -> Report:
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["failovers"] == 1
    notes = [
        "lost and duplicated count source events by identity (did, collection, rkey, "
        "time_us) against the lake's rows; both must be 0.",
        "failovers: primaries the sentinels promoted after the SIGKILL (must be 1).",
        "forgotten: events the killed primary had confirmed that the promoted replica had "
        "not received; the ingester rewound its source and read them again.",
        "replayed: copies of events the lake already held that its replay guard dropped.",
        "promotion_seconds: SIGKILL -> the new primary takes commands (down-after 1 s, "
        "then the sentinels' election); recovery_seconds: SIGKILL -> the ingester's "
        "batches land on it.",
    ]
    data = {
        "params": {"mode": mode, "source": source, "events": events, "rate": rate},
        "results": result,
        "ok": ok,
    }
    return Report(
        command="chaos-failover",
        title=f"skybuffer chaos failover --mode {mode}: the primary is killed mid-run",
        data=data,
        tables=[Table("chaos failover", [{"mode": mode, **_columns(result)}])],
        notes=notes,
        exit_code=0 if ok else 1,
    )
