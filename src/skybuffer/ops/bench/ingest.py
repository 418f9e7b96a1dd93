"""`skybuffer bench ingest`: skybuffer's ingest against its baselines, in one run.

Each benchmark runs on the same pre-generated realistic events (generation is not
timed) against a scratch redis-server of the shipped profile, and reports JSON-ready
figures. The baselines run in the same process and the same run, so the ratio between
them means something on whatever machine runs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from skybuffer.buffer.producer import Producer
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.spool import Spool
from skybuffer.constants import TYPES, Keys
from skybuffer.errors import MissingBinaryError
from skybuffer.ops.harness import START_US, machine, scratch_redis
from skybuffer.pipeline.ingest import Ingester
from skybuffer.privilege import program_env
from skybuffer.settings import IngestSettings, RedisSettings
from skybuffer.sources.memory import MemorySource
from skybuffer.testbed.generator import generate

BASELINE_SECONDS = 5.0  # the seed-style loop is slow: time-box it
BENCH_USER = "skybuffer-bench"


def bench_ingest(events: int, base: RedisSettings, ingest: IngestSettings, seed: int = 1) -> dict:
    """(a) skybuffer ingest, (b) seed-style XADD per event, (c) redis-benchmark XADD,
    (d) Redis bytes per event for the codec and for plain JSON."""
    data = generate(seed, events, START_US)
    mean_size = sum(map(len, data)) / len(data)
    with scratch_redis(base) as server:
        result = _skybuffer_ingest(server, data, ingest)
        result["bytes_per_event"] = stream_bytes(server.client("admin"), Keys()) / events
        baseline = _seed_style(server.client("admin"), data)
        result["baseline_events_per_s"] = baseline["events_per_s"]
        result["json_bytes_per_event"] = baseline["bytes_per_event"]
        result["redis_limit_events_per_s"] = _redis_benchmark(server, int(mean_size))
    result.update(
        events=events,
        mean_event_bytes=round(mean_size, 1),
        speedup_vs_baseline=round(result["events_per_s"] / result["baseline_events_per_s"], 1),
        machine=machine(),
        targets={"events_per_s": 200_000, "speedup_vs_baseline": 20, "bytes_per_event": 180},
    )
    return result


def _skybuffer_ingest(server: ManagedRedis, data: list[bytes], settings: IngestSettings) -> dict:
    """Parse, classify, encode and write, timed until Redis confirmed the last batch."""
    spool_dir = Path(tempfile.mkdtemp(prefix="skybuffer-bench-spool-"))
    try:
        producer = Producer(server.client(), Keys(), "bench")
        ingester = Ingester(producer, MemorySource(data), settings, Spool(spool_dir, "bench"))
        started = time.perf_counter()
        stats = ingester.run()
        elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    assert stats.events == len(data), f"ingested {stats.events} of {len(data)}"
    return {
        "events_per_s": round(len(data) / elapsed),
        "seconds": round(elapsed, 3),
        "batches": stats.batches,
        "mb_per_s": round(stats.raw_bytes / elapsed / 1e6, 1),
    }


def stream_bytes(client: redis.Redis, keys: Keys) -> int:
    """Redis memory of every stream, entry overhead included (MEMORY USAGE, exact)."""
    total = 0
    for type_ in TYPES:
        total += client.memory_usage(keys.stream(type_), samples=0) or 0
    return total


def _seed_style(client: redis.Redis, data: list[bytes]) -> dict:
    """The seed's approach: one JSON XADD per event, one round trip each (time-boxed)."""
    key = Keys().ops_prefix + "bench:json"
    sent = 0
    started = time.perf_counter()
    deadline = started + BASELINE_SECONDS
    for raw in data:
        client.xadd(key, {"json": raw})
        sent += 1
        if sent % 256 == 0 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - started
    per_event = (client.memory_usage(key, samples=0) or 0) / sent
    client.delete(key)
    return {"events_per_s": round(sent / elapsed), "bytes_per_event": round(per_event, 1)}


def _redis_benchmark(server: ManagedRedis, payload_bytes: int, requests: int = 200_000) -> int:
    """redis-benchmark's pipelined XADD of the same payload size: the server's own limit."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise MissingBinaryError("redis-benchmark", "redis-tools")
    key = Keys().ops_prefix + "bench:redis-benchmark"
    admin = server.client("admin")
    # redis-benchmark takes a password only on its command line (visible in `ps`): give
    # it a throw-away user that needs none, confined to one scratch key, deleted after.
    commands = ["+xadd", "+ping", "+hello", "+config|get"]
    admin.acl_setuser(BENCH_USER, enabled=True, nopass=True, keys=[key], commands=commands)
    # An explicit command: redis-benchmark of Redis 7.0 has no built-in xadd test.
    where = ["-h", server.settings.host, "-p", str(server.settings.port)]
    login = ["--user", BENCH_USER, "-a", "unused"]
    load = ["-P", "32", "-n", str(requests), "-q", "XADD", key, "*", "json", "x" * payload_bytes]
    try:
        out = subprocess.run(
            [binary, *where, *login, *load],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env=program_env(),
        )
    finally:
        admin.acl_deluser(BENCH_USER)
    server.client("admin").delete(key)
    match = re.search(r"([\d.]+) requests per second", out.stdout.split("\r")[-1])
    if match is None:
        raise RuntimeError(f"unexpected redis-benchmark output: {out.stdout[-300:]!r}")
    return round(float(match.group(1)))
