"""`skybuffer bench ingest --source jetstream`: events from a real WebSocket to Redis-confirmed.

``bench_jetstream_ingest`` starts the local replay server in its own process (unpaced,
looping a synthetic file so every event is unique) and a scratch redis-server, then runs
the real ingester with the Jetstream source until ``events`` are confirmed by Redis.
The figure is end to end: socket read, zstd (if asked), dedupe window, classify,
encode, one MULTI/EXEC per batch with the position. Both servers are stopped after.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skybuffer import metrics, processes
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.spool import Spool
from skybuffer.constants import Keys
from skybuffer.datadir import free_port
from skybuffer.pipeline.ingest import Ingester
from skybuffer.privilege import skybuffer_env
from skybuffer.settings import IngestSettings, JetstreamSettings, Settings
from skybuffer.sources.jetstream import JetstreamSource
from skybuffer.testbed.generator import generate

FILE_EVENTS = 100_000
"""Events in the served file; larger runs loop over it (time_us, rev, seq shifted)."""


def bench_jetstream_ingest(
    events: int = 300_000,
    settings: Settings | None = None,
    *,
    compress: bool | None = None,
    file_rate: float = 5000.0,
    seed: int = 42,
) -> dict[str, Any]:
    """Ingest ``events`` from a local replay server into a scratch Redis; figures as a dict.

    ``settings`` gives the redis.conf, the ingest batching and the Jetstream knobs (its
    Redis URL and port are not used: the scratch server gets a free port and a temp dir).
    ``file_rate`` sets the time_us spacing of the served events (events per second of
    event time), which sizes the resume window carried in every position.
    """
    settings = settings or Settings()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="skybuffer-bench-") as tmp:
        work = Path(tmp)
        path = work / "events.jsonl"
        lines = generate(seed, min(events, FILE_EVENTS), 1_780_000_000_000_000, rate=file_rate)
        path.write_bytes(b"\n".join(lines) + b"\n")
        port = free_port()
        server = _start_server(path, port, loop=events > FILE_EVENTS)
        redis_settings = settings.redis.model_copy(update={"url": None, "port": free_port()})
        redis = ManagedRedis(redis_settings, work / "redis")
        try:
            redis.start()
            _wait_until_listening(server)
            jetstream = settings.jetstream.model_copy(
                update={"compress": settings.jetstream.compress if compress is None else compress}
            )
            ingest = settings.ingest.model_copy(update={"spool_dir": work / "spool"})
            result = _run(redis, f"ws://127.0.0.1:{port}/subscribe", events, jetstream, ingest)
        finally:
            processes.stop_pid(server.pid, timeout=10)
            redis.stop()
    return result | {
        "file_rate": file_rate,
        "load_average_before": round(load, 2),
        "cpus": os.cpu_count(),
        "targets": {"events_per_s": 50_000},
    }


def _run(
    redis: ManagedRedis, url: str, events: int, jetstream: JetstreamSettings, ingest: IngestSettings
) -> dict[str, Any]:
    """Time the real ingester from its start until Redis confirmed the last event."""
    source = JetstreamSource(jetstream, urls=[url], collections=[], count=events)
    client = redis.client()
    producer = Producer(client, Keys(), source.name)
    assert ingest.spool_dir is not None
    spool = Spool(ingest.spool_dir, source.name)
    ingester = Ingester(producer, source, ingest, spool, count=events)
    wire_before = _sample("skybuffer_source_received_bytes_total")
    began = time.perf_counter()
    stats = ingester.run()
    seconds = time.perf_counter() - began
    position = producer.checkpoint().position or ""
    wire = _sample("skybuffer_source_received_bytes_total") - wire_before
    return {
        "source": "jetstream",
        "events": stats.events,
        "seconds": round(seconds, 3),
        "events_per_s": round(stats.events / seconds),
        "mb_per_s": round(stats.raw_bytes / seconds / 1e6, 1),
        "batches": stats.batches,
        "compress": jetstream.compress,
        "wire_bytes_per_event": round(wire / max(stats.events, 1), 1),
        "position_bytes": len(position),
        "redis_used_memory": int(client.info("memory")["used_memory"]),
    }


def _sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def _start_server(path: Path, port: int, *, loop: bool) -> subprocess.Popen[bytes]:
    """The replay server in its own process, so it has its own core and GIL."""
    code = (
        "from pathlib import Path; from skybuffer.testbed.replay_server import run_replay_server;"
        f"run_replay_server(Path({str(path)!r}), port={port}, loop={loop})"
    )
    args = [sys.executable, "-c", code]
    return processes.spawn(args, cwd=None, log=subprocess.PIPE, env=skybuffer_env(), stderr=None)


def _wait_until_listening(server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """The server prints one line once it listens (probing the port would log a failed
    handshake on the server)."""
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], timeout)
    if not ready or not server.stdout.readline():
        raise RuntimeError(f"the replay server did not start within {timeout:.0f}s")
