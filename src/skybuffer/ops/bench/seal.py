"""`skybuffer bench seal`: what sealing does to a day of lake, and to the queries over it.

On a scratch redis-server and a scratch lake, a "day" of past hours is written the way
the DataWriter really writes it: the testbed generator's events, spread evenly over the
hours, go through the replay source and Redis, and one ``drain_once`` per simulated
5-minute run writes them, so each hour gets ~12 files per type. Each run also re-sends
the last ``duplicate_share`` of the previous run's events first, as a Jetstream host does
when a consumer resumes from a cursor (bluesky-social/jetstream#343): duplicates that only
sealing removes. The lake is then copied (the unsealed copy) and sealed with the real
sealing run (``seal_ready``, the buffer's own watermark).

Reported side by side: files per type before and after (target: one per hour), Parquet
bytes per event before and after, the seal's throughput (events read per second, seconds
per hour sealed), the duplicates injected and dropped, and typical analytical queries run
by DuckDB over the unsealed copy and the sealed lake through the same views as
``skybuffer query`` (lake/query.py): each timed ``repeats`` times, alternating lakes so
both see the same machine, the median reported, with whether both lakes gave the same
answer (counts of events differ by the duplicates; distinct counts and first posts do not).
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb

from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES, Keys
from skybuffer.datadir import free_port
from skybuffer.errors import SkybufferError
from skybuffer.lake.inventory import lake_hours, verify_lake
from skybuffer.lake.query import connect
from skybuffer.lake.schema import HOUR_US
from skybuffer.ops.harness import START_US, machine
from skybuffer.pipeline.datawriter import drain_once
from skybuffer.pipeline.runner import build_ingester
from skybuffer.pipeline.sealing import seal_ready
from skybuffer.settings import LakeSettings, Settings, load_settings
from skybuffer.testbed.generator import CHUNK, Factory

RUNS_PER_HOUR = 12
"""One DataWriter run every 5 minutes."""
DAY_US = 24 * HOUR_US
DAY_START_US = START_US // DAY_US * DAY_US
"""Midnight UTC of the tools' synthetic day (2026-05-25): long past, so every hour is ready."""

EVENTS = """CREATE VIEW events AS """ + " UNION ALL ".join(
    f"SELECT did, kind, collection, operation, event_time FROM {t}" for t in TYPES
)
QUERIES = {
    "events_by_collection": (
        "SELECT coalesce(collection, kind) AS collection, count(*) AS events "
        "FROM events GROUP BY 1 ORDER BY 2 DESC, 1"
    ),
    "distinct_accounts_per_collection": (
        "SELECT coalesce(collection, kind) AS collection, count(DISTINCT did) AS accounts "
        "FROM events GROUP BY 1 ORDER BY 2 DESC, 1"
    ),
    "events_by_hour_of_day": (
        "SELECT hour(event_time) AS hour_of_day, count(*) AS events FROM events "
        "GROUP BY 1 ORDER BY 1"
    ),
    "first_post_per_account": (
        "SELECT did, min(event_time) AS first_post, arg_min(rkey, event_time) AS rkey "
        "FROM posts WHERE operation = 'create' GROUP BY did ORDER BY did"
    ),
}


def bench_seal(
    hours: int = 24,
    events_per_hour: int = 20_000,
    settings: Settings | None = None,
    *,
    duplicate_share: float = 0.01,
    repeats: int = 5,
    seed: int = 16,
) -> dict[str, Any]:
    """Write ``hours`` past hours of ``events_per_hour`` events, seal them, and return the
    figures (module docstring). ``settings`` supplies the writer and lake knobs; the data
    dir, Redis and lake are always scratch ones, removed afterwards."""
    if hours < 1 or events_per_hour < RUNS_PER_HOUR:
        raise SkybufferError(
            f"bench seal needs --hours ≥ 1 and --events-per-hour ≥ {RUNS_PER_HOUR}"
        )
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="skybuffer-bench-seal-"))
    try:
        scratch = _scratch_settings(workdir, settings)
        server = ManagedRedis(scratch.redis, scratch.redis_dir)
        server.start()
        try:
            written = _write_day(
                scratch, server, workdir, hours, events_per_hour, duplicate_share, seed
            )
            before = _lake_state(scratch.lake)
            unsealed = _copy_lake(scratch.lake, workdir / "unsealed-lake")
            sealing = _seal(scratch)
        finally:
            server.stop()
        after = _lake_state(scratch.lake)
        sealing["verify_ok"] = verify_lake(scratch.lake).ok
        queries = compare_queries(unsealed, scratch.lake, repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _figures(hours, written, before, after, sealing, queries, load_before)


def _scratch_settings(workdir: Path, base: Settings | None) -> Settings:
    writer = base.writer.model_dump() if base else {}
    lake = base.lake.model_dump() if base else {}
    lake["root"] = None  # always the scratch lake
    redis = {"port": free_port(), "maxmemory": "1gb"}
    metrics = {"ingest_port": 0, "writer_port": 0}
    return load_settings(data_dir=workdir, redis=redis, writer=writer, lake=lake, metrics=metrics)


def day_events(seed: int, total: int, start_us: int, step_us: int) -> Iterator[bytes]:
    """The generator's events 0..total-1, a chunk at a time (a day need not fit in memory)."""
    factory = Factory(seed)
    for index in range(-(-total // CHUNK)):
        chunk = factory.chunk(index, start_us, step_us)
        yield from chunk[: total - index * CHUNK]


def _write_day(
    settings: Settings,
    server: ManagedRedis,
    workdir: Path,
    hours: int,
    events_per_hour: int,
    duplicate_share: float,
    seed: int,
) -> dict[str, Any]:
    """One replay file and one drain per 5-minute run; each run first re-sends the tail of
    the previous one (the upstream duplicates)."""
    total, runs = hours * events_per_hour, hours * RUNS_PER_HOUR
    events = day_events(seed, total, DAY_START_US, HOUR_US // events_per_hour)
    previous: list[bytes] = []
    duplicates, seconds = 0, 0.0
    with _quiet("skybuffer.pipeline"):
        for run in range(runs):
            batch = list(islice(events, total * (run + 1) // runs - total * run // runs))
            resent = round(len(previous) * duplicate_share)
            tail = previous[len(previous) - resent :] if resent else []
            seconds += _one_run(settings, server, workdir / "run.jsonl", tail + batch)
            duplicates, previous = duplicates + len(tail), batch
    return {"events": total, "duplicates": duplicates, "runs": runs, "seconds": seconds}


def _one_run(settings: Settings, server: ManagedRedis, replay: Path, lines: list[bytes]) -> float:
    """Ingest ``lines`` through the replay source and Redis, drain once; its seconds."""
    replay.write_bytes(b"\n".join(lines) + b"\n")
    cursor = Keys(settings.redis.prefix).cursor("replay")
    server.client("admin").delete(cursor)  # each run's file is a new replay from its start
    started = time.perf_counter()
    build_ingester(settings, "replay", file=replay).run()
    result = drain_once(settings)
    seconds = time.perf_counter() - started
    replay.unlink()
    if not result.ok:
        raise SkybufferError(f"bench seal: a drain failed: {result.errors}")
    return seconds


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """A log line per run and type (and per hour sealed) would bury the figures: warnings
    only, meanwhile."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _lake_state(lake: LakeSettings) -> dict[str, dict[str, int]]:
    """Per type: hours, files, rows and bytes of what a reader reads."""
    state = {t: {"hours": 0, "files": 0, "rows": 0, "bytes": 0} for t in TYPES}
    for hour in lake_hours(lake):
        figures = state[hour.type]
        figures["hours"] += 1
        figures["files"] += hour.files
        figures["rows"] += hour.rows
        figures["bytes"] += hour.bytes
    return state


def _copy_lake(lake: LakeSettings, target: Path) -> LakeSettings:
    assert lake.root is not None, "settings fill lake.root"
    shutil.copytree(lake.root, target)
    return lake.model_copy(update={"root": str(target)})


def _seal(settings: Settings) -> dict[str, Any]:
    """One real sealing run, timed in wall and CPU seconds."""
    cpu_before, started = os.times(), time.perf_counter()
    with _quiet("skybuffer.pipeline"):
        report = seal_ready(settings)
    seconds, cpu_after = time.perf_counter() - started, os.times()
    cpu = cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system
    cpu += cpu_after.children_user - cpu_before.children_user
    if report.waiting:
        raise SkybufferError(f"bench seal: {report.waiting} hours were not ready to seal")
    return {
        "partitions_sealed": len(report.sealed),
        "files_in": sum(r.files_in for r in report.sealed),
        "rows_out": sum(r.rows for r in report.sealed),
        "duplicates_dropped": report.duplicates_dropped,
        "seconds": seconds,
        "cpu_seconds": cpu,
    }


def compare_queries(
    unsealed: LakeSettings, sealed: LakeSettings, repeats: int
) -> dict[str, dict[str, Any]]:
    """Each query's median seconds over both lakes, timed alternately, and whether both
    gave the same answer."""
    cons = {"unsealed": connect(unsealed), "sealed": connect(sealed)}
    try:
        for con in cons.values():
            con.execute(EVENTS)
        return {name: _compare(cons, sql, repeats) for name, sql in QUERIES.items()}
    finally:
        for con in cons.values():
            con.close()


def _compare(cons: dict[str, duckdb.DuckDBPyConnection], sql: str, repeats: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in cons}
    answers: dict[str, Any] = {}
    for _ in range(max(1, repeats)):
        for name, con in cons.items():
            started = time.perf_counter()
            answers[name] = con.sql(sql).fetchall()
            times[name].append(time.perf_counter() - started)
    unsealed, sealed = (statistics.median(times[n]) for n in ("unsealed", "sealed"))
    return {
        "unsealed_s": round(unsealed, 4),
        "sealed_s": round(sealed, 4),
        "speedup": round(unsealed / sealed, 2) if sealed else 0.0,
        "result_rows": len(answers["sealed"]),
        "same_result": answers["unsealed"] == answers["sealed"],
    }


def _figures(
    hours: int,
    written: dict[str, Any],
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    sealing: dict[str, Any],
    queries: dict[str, dict[str, Any]],
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    rows_before = sum(t["rows"] for t in before.values())
    bytes_before = sum(t["bytes"] for t in before.values())
    rows_after = sum(t["rows"] for t in after.values())
    bytes_after = sum(t["bytes"] for t in after.values())
    seconds = sealing["seconds"]
    return {
        "hours": hours,
        "events": written["events"],
        "duplicates_injected": written["duplicates"],
        "datawriter_runs": written["runs"],
        "write_seconds": round(written["seconds"], 1),
        "files_per_type_hour_before": round(_per_type_hour(before, "files"), 2),
        "files_per_type_hour_after": round(_per_type_hour(after, "files"), 2),
        "files_before": sum(t["files"] for t in before.values()),
        "files_after": sum(t["files"] for t in after.values()),
        "rows_before": rows_before,
        "rows_after": rows_after,
        "parquet_bytes_before": bytes_before,
        "parquet_bytes_after": bytes_after,
        "parquet_bytes_per_event_before": round(bytes_before / rows_before, 1)
        if rows_before
        else 0.0,
        "parquet_bytes_per_event_after": round(bytes_after / rows_after, 1) if rows_after else 0.0,
        "duplicates_dropped": sealing["duplicates_dropped"],
        "seal_seconds": round(seconds, 2),
        "seal_cpu_seconds": round(sealing["cpu_seconds"], 2),
        "seal_events_per_s": round(rows_before / seconds) if seconds else 0,
        "seal_seconds_per_hour": round(seconds / hours, 3),
        "partitions_sealed": sealing["partitions_sealed"],
        "verify_ok": sealing["verify_ok"],
        "load_before": " ".join(f"{x:.2f}" for x in load_before),
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "per_type": {t: _type_line(before[t], after[t]) for t in TYPES},
        "queries": queries,
        "machine": machine(),
    }


def _per_type_hour(state: dict[str, dict[str, int]], key: str) -> float:
    partitions = sum(t["hours"] for t in state.values())
    return sum(t[key] for t in state.values()) / partitions if partitions else 0.0


def _type_line(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    return {
        "files": f"{before['files']}->{after['files']}",
        "bytes_per_event": f"{_per_row(before)}->{_per_row(after)}",
    }


def _per_row(figures: dict[str, int]) -> float:
    return round(figures["bytes"] / figures["rows"], 1) if figures["rows"] else 0.0
