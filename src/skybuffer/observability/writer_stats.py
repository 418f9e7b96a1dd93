"""DataWriter figures that outlive the process that made them, kept in Redis.

Prefect runs every flow run in a subprocess of the serving process, so counters held in
the run's memory die with it. Instead each batch and run adds its figures to one Redis
hash (AOF-persisted like the buffer), and the long-lived process that serves the
DataWriter's /metrics reads that hash on every scrape. No Pushgateway to run, nothing
lost when the serving process restarts, and `skybuffer write --loop` exports the same
metrics the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from skybuffer.constants import (
    TYPES,
    WS_BUCKET,
    WS_LAST_DURATION,
    WS_LAST_RUN,
    WS_LAST_SUCCESS,
    WS_RUNS,
    WS_RUNS_COUNT,
    WS_RUNS_SUM,
    Keys,
    ws_field,
)

log = logging.getLogger(__name__)
RUN_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 600.0)
OUTCOMES = ("success", "failure", "timeout", "skipped")
LAST_RUN_GAUGES = (
    (
        "last_success_timestamp_seconds",
        WS_LAST_SUCCESS,
        "Unix time of the last successful DataWriter run.",
    ),
    ("last_run_timestamp_seconds", WS_LAST_RUN, "Unix time of the last DataWriter run."),
    ("last_run_duration_seconds", WS_LAST_DURATION, "Duration of the last DataWriter run."),
)
"""Gauge name, stats field, help: the last run's figures."""


def remember(client: redis.Redis, keys: Keys, record: Callable[..., None], *args: Any) -> None:
    """Add figures with ``record``, best effort: the work they describe is already done,
    and at maxmemory Redis refuses HINCRBY; a lost figure must not fail it."""
    try:
        record(client, keys, *args)
    except redis.RedisError as exc:
        log.warning("Could not record the writer's figures in Redis: %s", exc)


def record_batch(
    client: redis.Redis, keys: Keys, type_: str, rows: int, size: int, files: int
) -> None:
    """Add one committed batch's rows, bytes and files."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(keys.writer_stats, ws_field("rows", type_), rows)
    pipe.hincrby(keys.writer_stats, ws_field("bytes", type_), size)
    pipe.hincrby(keys.writer_stats, ws_field("files", type_), files)
    pipe.execute()


def record_forgot(client: redis.Redis, keys: Keys, type_: str, guarded: int) -> None:
    """Count one time Redis was found to have forgotten commits of ``type_``."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(keys.writer_stats, ws_field("forgot", type_), 1)
    pipe.hincrby(keys.writer_stats, ws_field("guarded", type_), guarded)
    pipe.execute()


def record_replayed(client: redis.Redis, keys: Keys, type_: str, events: int) -> None:
    """Count replayed copies dropped because the lake held them already."""
    client.hincrby(keys.writer_stats, ws_field("replayed", type_), events)


def record_run(client: redis.Redis, keys: Keys, outcome: str, seconds: float) -> None:
    """Count one run by outcome, with its duration in the histogram."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(keys.writer_stats, ws_field(WS_RUNS, outcome), 1)
    for bound in RUN_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(keys.writer_stats, ws_field(WS_BUCKET, bound), 1)
    pipe.hincrby(keys.writer_stats, WS_RUNS_COUNT, 1)
    pipe.hincrbyfloat(keys.writer_stats, WS_RUNS_SUM, seconds)
    now = time.time()
    pipe.hset(keys.writer_stats, mapping={WS_LAST_DURATION: seconds, WS_LAST_RUN: now})
    if outcome == "success":
        pipe.hset(keys.writer_stats, WS_LAST_SUCCESS, now)
    pipe.execute()


def read_stats(client: redis.Redis, keys: Keys) -> dict[str, float]:
    raw = client.hgetall(keys.writer_stats)
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


LATEST = (WS_LAST_RUN, WS_LAST_SUCCESS, WS_LAST_DURATION)
"""Figures of the last run: of several partitions, the latest (the others add up)."""


def merge_stats(parts: list[dict[str, float]]) -> dict[str, float]:
    """Several partitions' figures as one writer's: counts added, last runs the latest."""
    merged: dict[str, float] = {}
    for stats in parts:
        for name, value in stats.items():
            if name in LATEST:
                merged[name] = max(merged.get(name, value), value)
            else:
                merged[name] = merged.get(name, 0.0) + value
    return merged


def lake_totals(stats: dict[str, float]) -> tuple[int, int]:
    """Rows and bytes the DataWriter has committed to the lake, all types together."""
    rows = sum(v for k, v in stats.items() if k.startswith(ws_field("rows", "")))
    size = sum(v for k, v in stats.items() if k.startswith(ws_field("bytes", "")))
    return int(rows), int(size)


class WriterStatsCollector(Collector):
    """Exposes the Redis-kept DataWriter figures as skybuffer_writer_* metrics (of every
    partition of a partitioned buffer, added up: ``parts``)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, parts: list[tuple[redis.Redis, Keys]] | None = None
    ) -> None:
        self.parts = parts or [(client, keys)]

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        try:
            stats = merge_stats([read_stats(client, keys) for client, keys in self.parts])
        except redis.RedisError:
            return  # Redis down: RedisDown alerts; the writer's figures are simply absent
        yield from families(stats)

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        """The families without samples: registering needs no Redis round trip."""
        yield from families({key: 0.0 for key in (WS_LAST_SUCCESS, WS_LAST_RUN, WS_LAST_DURATION)})


def families(
    stats: Mapping[str, float],
) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
    yield from _per_type(stats)
    yield _runs(stats)
    yield _duration_histogram(stats)
    yield from _last(stats)


def _per_type(stats: Mapping[str, float]) -> Iterator[CounterMetricFamily]:
    for what, unit, doc in (
        ("rows", "rows", "Rows written durably to the lake, by type."),
        ("bytes", "bytes", "Parquet bytes written durably to the lake, by type."),
        ("files", "files", "Parquet files written durably to the lake, by type."),
        ("forgot", "buffer_forgot", "Times the DataWriter found Redis had forgotten commits."),
        (
            "replayed",
            "replayed_events",
            "Replayed copies of events the lake already held, dropped (after Redis forgot).",
        ),
    ):
        family = CounterMetricFamily(f"skybuffer_writer_{unit}", doc, labels=["type"])
        for type_ in TYPES:
            family.add_metric([type_], stats.get(ws_field(what, type_), 0.0))
        yield family


def _runs(stats: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "skybuffer_writer_runs",
        "DataWriter runs, by outcome (success, failure, timeout, skipped).",
        labels=["outcome"],
    )
    for outcome in OUTCOMES:
        family.add_metric([outcome], stats.get(ws_field(WS_RUNS, outcome), 0.0))
    return family


def _duration_histogram(stats: Mapping[str, float]) -> HistogramMetricFamily:
    buckets = [(str(b), stats.get(ws_field(WS_BUCKET, b), 0.0)) for b in RUN_BUCKETS]
    buckets.append(("+Inf", stats.get(WS_RUNS_COUNT, 0.0)))
    return HistogramMetricFamily(
        "skybuffer_writer_run_duration_seconds",
        "Duration of DataWriter runs (budget: 240 s).",
        buckets=buckets,
        sum_value=stats.get(WS_RUNS_SUM, 0.0),
    )


def _last(stats: Mapping[str, float]) -> Iterator[GaugeMetricFamily]:
    for name, key, doc in LAST_RUN_GAUGES:
        if key in stats:
            yield GaugeMetricFamily(f"skybuffer_writer_{name}", doc, value=stats[key])
