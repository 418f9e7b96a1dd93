"""`skybuffer bench write`: how fast one DataWriter process drains a realistic backlog.

A scratch redis-server and lake live in a temporary data dir. The backlog is made by
``skybuffer ingest --source synthetic --rate 0`` in a child process (so its heap and
threads do not disturb the measurement); the drain runs in this process, timed from the
first read to the last commit. Reported: events/s, the drain's CPU seconds (steadier than
wall time on a shared machine), Parquet bytes per event (overall and per type), files,
Redis used_memory before and after, this process's peak RSS (and its RSS before the
drain: the libraries' share of the peak), and how many lines the conversion left to
DuckDB (lake/rows.py; 0 for the synthetic events).

Before the drain, the in-run reference (ops/bench/reference.py) converts the same events, as
NDJSON, with pyarrow alone in a child process; ``vs_reference`` is the writer's events/s
over the reference's, a figure that travels between machines (the raw events/s does not).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skybuffer.buffer.server import ManagedRedis
from skybuffer.datadir import free_port
from skybuffer.errors import SkybufferError
from skybuffer.ops.bench.reference import run_reference
from skybuffer.pipeline.datawriter import DataWriter
from skybuffer.pipeline.drain_result import TypeResult
from skybuffer.privilege import skybuffer_env
from skybuffer.processes import peak_rss_bytes
from skybuffer.settings import Settings, load_settings


def bench_write(
    events: int = 1_000_000, settings: Settings | None = None, seed: int = 42
) -> dict[str, Any]:
    """Drain ``events`` buffered synthetic events once and return the figures.

    ``settings`` supplies the writer and lake knobs (batch size, compression, ...);
    the data dir, Redis and lake root are always scratch ones, removed afterwards.
    """
    workdir = Path(tempfile.mkdtemp(prefix="skybuffer-bench-"))
    try:
        scratch = _scratch_settings(workdir, settings)
        server = ManagedRedis(scratch.redis, scratch.redis_dir)
        server.start()
        try:
            _fill(scratch, events, seed)
            reference = run_reference(scratch, workdir / "reference")
            figures = _drain(scratch, server, events)
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _with_reference(figures, reference)


def _with_reference(figures: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The writer's figures, then the reference's right after its events/s."""
    merged: dict[str, Any] = {}
    for key, value in figures.items():
        merged[key] = value
        if key == "events_per_s":
            merged["reference_events_per_s"] = reference["reference_events_per_s"]
            rate = reference["reference_events_per_s"]
            merged["vs_reference"] = round(value / rate, 2) if rate else 0.0
    merged.update((k, v) for k, v in reference.items() if k not in merged)
    return merged


def _scratch_settings(workdir: Path, base: Settings | None) -> Settings:
    writer = base.writer.model_dump() if base else {}
    lake = base.lake.model_dump() if base else {}
    lake["root"] = None  # always the scratch lake
    redis = {"port": free_port(), "maxmemory": "4gb"}
    metrics = {"ingest_port": 0, "writer_port": 0}
    return load_settings(data_dir=workdir, redis=redis, writer=writer, lake=lake, metrics=metrics)


def _fill(settings: Settings, events: int, seed: int) -> None:
    env = {
        **skybuffer_env(),
        "SKYBUFFER_DATA_DIR": str(settings.data_dir),
        "SKYBUFFER_REDIS__PORT": str(settings.redis.port),
        "SKYBUFFER_REDIS__MAXMEMORY": "4gb",
        "SKYBUFFER_METRICS__INGEST_PORT": "0",
    }
    source = ["--source", "synthetic", "--rate", "0", "--seed", str(seed)]
    command = [sys.executable, "-m", "skybuffer", "ingest", *source, "--count", str(events)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SkybufferError(f"bench: filling the buffer failed: {done.stderr[-2000:]}")


def _drain(settings: Settings, server: ManagedRedis, events: int) -> dict[str, Any]:
    admin = server.client("admin")
    before = int(admin.info("memory")["used_memory"])
    writer = DataWriter.from_settings(settings)
    start_rss = _rss_bytes()
    try:
        cpu_before, started = os.times(), time.perf_counter()
        result = writer.drain_once()
        seconds = time.perf_counter() - started
        cpu_after = os.times()
        fallback = writer.converter.rows.fallback_lines
    finally:
        writer.close()
    if not result.ok:
        raise SkybufferError(f"bench: the drain failed: {result.errors}")
    after = int(admin.info("memory")["used_memory"])
    size = sum(r.bytes for r in result.types.values())
    return {
        "events": events,
        "rows": result.rows,
        "seconds": round(seconds, 3),
        "events_per_s": round(result.rows / seconds) if seconds else 0,
        "cpu_seconds": round(
            cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system, 3
        ),
        "parquet_bytes": size,
        "parquet_bytes_per_event": round(size / result.rows, 1) if result.rows else 0.0,
        "files": sum(r.files for r in result.types.values()),
        "batches": sum(r.batches for r in result.types.values()),
        "per_type": {t: _type_figures(r) for t, r in result.types.items()},
        "redis_used_memory_before": before,
        "redis_used_memory_after": after,
        "writer_peak_rss_bytes": peak_rss_bytes(),
        "writer_start_rss_bytes": start_rss,
        "duckdb_fallback_lines": fallback,
        "batch_events": settings.writer.batch_events,
        "compression": f"{settings.lake.compression}-{settings.lake.compression_level}",
        "cpus": os.cpu_count(),
    }


def _rss_bytes() -> int:
    """This process's resident memory now (VmRSS): before the drain, what the libraries
    (pyarrow, DuckDB, redis-py: mostly shared code pages) cost before any event."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _type_figures(r: TypeResult) -> dict[str, Any]:
    return {
        "rows": r.rows,
        "files": r.files,
        "bytes": r.bytes,
        "bytes_per_event": round(r.bytes / r.rows, 1) if r.rows else 0.0,
        "seconds": round(r.seconds, 3),
    }
