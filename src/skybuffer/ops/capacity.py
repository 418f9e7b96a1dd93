"""`skybuffer capacity`: do 8 hours of events fit, measured on the live Redis.

Loads N realistic synthetic events through skybuffer's real ingest path (Ingester ->
Producer -> one MULTI/EXEC per batch) into a scratch stream set (``{prefix}ops:capacity:``),
samples Redis memory as it goes, then reads every event back and compares the lot by a
multiset checksum (count + sum of 64-bit BLAKE2b digests: order-free, so it does not care
which stream an event went to, but a lost, duplicated or altered event changes it).

The figures answer the seed's MET-27 question (2.7M events in 8 h in 2 GB: the seed's
plain JSON took 78.5%) and today's: what 8 hours at ~350 ev/s (``report.events_in``, the
same count the audit uses) would take, and how many hours the configured maxmemory holds
at the seed's 94 ev/s, at mid-2026's ~350 ev/s and at the ~1,000 ev/s 2025 average
(docs/JETSTREAM.md, "Event rates"). The report's title and plot describe the run itself
(events loaded, seconds); the plot's axis fits the data. The scratch keys are deleted.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from skybuffer.buffer.codec import Decoder
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.spool import Spool
from skybuffer.buffer.topology import connect
from skybuffer.constants import TYPES, Keys
from skybuffer.errors import ConfigError
from skybuffer.ops.harness import (
    START_US,
    Checksum,
    ChecksumSource,
    delete_keys,
    pyplot,
    save_plot,
    stream_entries,
)
from skybuffer.ops.report import (
    RATES,
    SEED_EVENTS_8H,
    SEED_JSON_MEMORY_PERCENT,
    STEADY_RATE,
    Plot,
    Report,
    Table,
    eight_hours,
    events_in,
    progress,
    target_of,
)
from skybuffer.pipeline.ingest import Ingester, IngestStats
from skybuffer.settings import Settings
from skybuffer.sources.synthetic import SyntheticSource

SEED_BYTES_PER_EVENT = SEED_JSON_MEMORY_PERCENT / 100 * 2 * 1024**3 / SEED_EVENTS_8H
PLANNING_BYTES_PER_EVENT = 170
"""Measured ~146 B/event, so 8 h at 350 ev/s fits a 2 GB server; a run that still meets
backpressure stops after STALL_SECONDS and says so (exit 1), it never hangs."""
STALL_SECONDS = 60.0


@dataclass
class LoadRun:
    """What loading did: stats, memory samples (events, used_memory, seconds), checksum."""

    stats: IngestStats
    seconds: float
    samples: list[tuple[int, int, float]] = field(default_factory=list)
    offered: Checksum = field(default_factory=Checksum)
    stalled: bool = False


def run_capacity(
    settings: Settings, events: int = 2_700_000, seed: int = 7, show_progress: bool = True
) -> Report:
    """LoadRun ``events`` on the live Redis, in scratch keys that are removed after."""
    client = connect(settings.redis, settings.redis_dir)
    keys = Keys(Keys(settings.redis.prefix).ops_prefix + "capacity:")
    delete_keys(client, keys.prefix)
    memory = client.info("memory")
    maxmemory, baseline = int(memory.get("maxmemory", 0)), int(memory["used_memory"])
    _preflight(events, maxmemory, baseline, settings.ingest.high_water)
    try:
        load = load_events(client, keys, settings, events, seed, show_progress)
        stream_bytes = sum(client.memory_usage(keys.stream(t), samples=0) or 0 for t in TYPES)
        found, read_seconds = read_back(client, keys)
    finally:
        delete_keys(client, keys.prefix)
    figures = _figures(load, found, read_seconds, stream_bytes, maxmemory, baseline, settings)
    figures.update(events_requested=events, target=target_of(client))
    return _report(figures, load).write(settings.reports_dir)


def _preflight(events: int, maxmemory: int, baseline: int, high_water: float) -> None:
    """Refuse a run that would push the live Redis into backpressure (nobody drains it)."""
    if not maxmemory:
        return
    need = events * PLANNING_BYTES_PER_EVENT
    room = maxmemory * high_water - baseline
    if need > room:
        raise ConfigError(
            f"capacity needs ~{need / 2**20:.0f} MB for {events:,} events but the live Redis "
            f"has {max(room, 0) / 2**20:.0f} MB below its high-water mark: use fewer --events "
            "or a larger maxmemory"
        )


def load_events(
    client: redis.Redis, keys: Keys, settings: Settings, events: int, seed: int, show: bool
) -> LoadRun:
    """Ingest through the real path on a thread; sample memory every ~0.5% of the run."""
    checksum = Checksum()
    synthetic = SyntheticSource(seed, rate=0, count=events, start_us=START_US)
    source = ChecksumSource(synthetic, checksum)
    spool_dir = Path(tempfile.mkdtemp(prefix="skybuffer-capacity-spool-"))
    every, began = max(events // 200, 1), time.monotonic()
    first = (0, int(client.info("memory")["used_memory"]), 0.0)
    load = LoadRun(IngestStats(), 0.0, [first], checksum)

    def sample(stats: IngestStats) -> None:
        if stats.events - load.samples[-1][0] >= every or stats.events >= events:
            used = int(client.info("memory")["used_memory"])
            load.samples.append((stats.events, used, time.monotonic() - began))

    producer = Producer(client, keys, "capacity")
    spool = Spool(spool_dir, "capacity")
    ingester = Ingester(producer, source, settings.ingest, spool, on_batch=sample, count=events)
    try:
        with progress(events, "loading events", show) as advance:
            load.stalled = _run_watched(ingester, events, advance)
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    load.stats, load.seconds = ingester.stats, time.monotonic() - began
    return load


def _run_watched(ingester: Ingester, events: int, advance: Any) -> bool:
    """Run the ingester; stop it if nothing lands for STALL_SECONDS (True if stopped)."""
    stop = threading.Event()
    thread = threading.Thread(target=ingester.run, args=(stop,), daemon=True)
    thread.start()
    last, moved = -1, time.monotonic()
    while thread.is_alive():
        thread.join(0.2)
        done = ingester.stats.events
        advance(done)
        if done != last:
            last, moved = done, time.monotonic()
        elif time.monotonic() - moved > STALL_SECONDS:
            stop.set()
            thread.join()
            return True
    return False


def read_back(client: redis.Redis, keys: Keys) -> tuple[dict[str, Any], float]:
    """Read and decode every entry of the scratch streams; digest every event."""
    checksum, decoder, counts = Checksum(), Decoder(), {}
    began = time.monotonic()
    for type_ in TYPES:
        n = 0
        for _id, fields in stream_entries(client, keys.stream(type_)):
            for event in decoder.decode(fields):
                checksum.add(event)
                n += 1
        counts[type_] = n
    found = {"events": checksum.count, "checksum": checksum.hexdigest(), "by_type": counts}
    return found, time.monotonic() - began


def _figures(
    load: LoadRun,
    found: dict[str, Any],
    read_seconds: float,
    stream_bytes: int,
    maxmemory: int,
    baseline: int,
    settings: Settings,
) -> dict[str, Any]:
    loaded = load.stats.events
    peak = max(used for _, used, _ in load.samples)
    per_event = max(stream_bytes, peak - baseline) / max(loaded, 1)
    usable = maxmemory * settings.ingest.high_water - baseline
    intact = found["checksum"] == load.offered.hexdigest() and found["events"] == loaded
    return {
        "events_loaded": loaded,
        "events_read_back": found["events"],
        "integrity_percent": 100.0 if intact else round(found["events"] / max(loaded, 1) * 100, 3),
        "checksum_offered": load.offered.hexdigest(),
        "checksum_read_back": found["checksum"],
        "stalled_in_backpressure": load.stalled,
        "by_type": found["by_type"],
        "load_seconds": round(load.seconds, 2),
        "events_per_s": round(loaded / load.seconds) if load.seconds else 0,
        "read_back_events_per_s": round(found["events"] / read_seconds) if read_seconds else 0,
        "maxmemory": maxmemory,
        "baseline_used_memory": baseline,
        "peak_used_memory": peak,
        "peak_percent_of_maxmemory": round(peak / maxmemory * 100, 2) if maxmemory else None,
        "headroom_bytes": maxmemory - peak if maxmemory else None,
        "stream_bytes": stream_bytes,
        "bytes_per_event": round(per_event, 1),
        "seed_bytes_per_event": round(SEED_BYTES_PER_EVENT, 1),
        "seed_percent_for_2_7M": SEED_JSON_MEMORY_PERCENT,
        "percent_for_2_7M": _percent(baseline + per_event * SEED_EVENTS_8H, maxmemory),
        "events_8h": events_in(rate=STEADY_RATE),
        "rate_8h": STEADY_RATE,
        "percent_for_8h": _percent(baseline + per_event * events_in(rate=STEADY_RATE), maxmemory),
        "high_water": settings.ingest.high_water,
        "buffer_hours_at": {
            name: round(usable / (per_event * rate) / 3600, 1) if maxmemory else None
            for name, rate in RATES.items()
        },
        "samples": [
            {"events": e, "used_memory": u, "seconds": round(s, 2)} for e, u, s in load.samples
        ],
    }


def _percent(part: float, whole: int) -> float | None:
    return round(part / whole * 100, 2) if whole else None


def describe_run(f: dict[str, Any]) -> str:
    """What this run did, for titles: ``200,000 events loaded in 1.7 s``."""
    return f"{f['events_loaded']:,} events loaded in {f['load_seconds']:,.1f} s"


def _report(f: dict[str, Any], load: LoadRun) -> Report:
    rows = [{"figure": figure, "value": value} for figure, value in _summary(f).items()]
    hours = [
        {"rate": name, "ev/s": round(RATES[name]), "hours of buffer": h}
        for name, h in f["buffer_hours_at"].items()
    ]
    notes = [
        "Integrity 100% means every loaded event was read back byte for byte (same count, "
        "same multiset checksum).",
        f"Hours of buffer = (maxmemory x {f['high_water']:.0%} high-water - memory in use "
        "before the run) / (bytes per event x rate): the time until ingest pauses.",
        "Rates: the seed's 2.7M events / 8 h; ~350 ev/s mid-2026 steady and ~1,000 ev/s "
        '2025 average (docs/JETSTREAM.md, "Event rates"). 8 hours of events means '
        f"{eight_hours(f['rate_8h'])}, as in `skybuffer audit`.",
        "The load rate includes generating the synthetic events on the same machine.",
    ]
    return Report(
        command="capacity",
        title=f"skybuffer capacity: {describe_run(f)}",
        data=f,
        tables=[Table("capacity", rows), Table("hours of buffer", hours)],
        notes=notes,
        plots=[Plot("memory", lambda path: _plot(f, path))],
        exit_code=0 if f["integrity_percent"] == 100.0 and not load.stalled else 1,
    )


def _summary(f: dict[str, Any]) -> dict[str, str]:
    """The capacity table: figure -> value, as a person reads it."""
    mb = 2**20
    peak = f"{f['peak_used_memory'] / mb:,.1f} MB"
    of_max = f"{f['peak_percent_of_maxmemory']}% of {f['maxmemory'] / mb:,.0f} MB"
    per_event = f"{f['bytes_per_event']} (seed's plain JSON: {f['seed_bytes_per_event']})"
    met27 = f"{f['percent_for_2_7M']}% of maxmemory (seed: {SEED_JSON_MEMORY_PERCENT}%)"
    return {
        "events loaded / read back": f"{f['events_loaded']:,} / {f['events_read_back']:,}",
        "integrity (checksum)": f"{f['integrity_percent']}%",
        "load rate": f"{f['events_per_s']:,} ev/s",
        "peak used memory": f"{peak} = {of_max}",
        "headroom at peak": f"{(f['headroom_bytes'] or 0) / mb:,.1f} MB",
        "Redis bytes per event": per_event,
        eight_hours(f["rate_8h"]) + " would take": f"{f['percent_for_8h']}% of maxmemory",
        "the seed's MET-27 load (2.7M events) would take": met27,
    }


LIMIT_STYLES = {"maxmemory": {"color": "red"}, "high-water": {"color": "orange", "linestyle": ":"}}


def plot_scale(f: dict[str, Any]) -> tuple[float, dict[str, float], str]:
    """The plot's y axis in MB: its top (10% above the data), the limits (maxmemory, the
    high-water mark) within 1.5x the data, drawn as lines, and a note naming the others."""
    mb = 2**20
    measured = max(s["used_memory"] for s in f["samples"]) / mb
    top = max(measured, _seed_mb(f, f["samples"][-1])) * 1.1
    limits = {}
    if f["maxmemory"]:
        limits = {
            "maxmemory": f["maxmemory"] / mb,
            "high-water": f["maxmemory"] * f["high_water"] / mb,
        }
    shown = {name: value for name, value in limits.items() if value <= top * 1.5}
    off = [f"{name} {value:,.0f} MB" for name, value in limits.items() if name not in shown]
    note = ""
    if off:
        note = (
            f"off the scale: {', '.join(off)} (the peak is "
            f"{f['peak_percent_of_maxmemory']}% of maxmemory)"
        )
    return max([top, *(value * 1.05 for value in shown.values())]), shown, note


def _seed_mb(f: dict[str, Any], sample: dict[str, Any]) -> float:
    """The seed's plain JSON at this sample, projected (MB)."""
    return (f["baseline_used_memory"] + sample["events"] * f["seed_bytes_per_event"]) / 2**20


def _plot(f: dict[str, Any], path: Path) -> None:
    """Memory against events loaded, the seed's projection, and the limits in range."""
    plt = pyplot()
    xs = [s["events"] / 1e3 for s in f["samples"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, [s["used_memory"] / 2**20 for s in f["samples"]], label="skybuffer (measured)")
    seed_label = f"seed's plain JSON ({f['seed_bytes_per_event']:.0f} B/event, projected)"
    ax.plot(xs, [_seed_mb(f, s) for s in f["samples"]], linestyle="--", label=seed_label)
    top, limits, note = plot_scale(f)
    for name, value in limits.items():
        label = (
            name if name == "maxmemory" else f"high-water ({f['high_water']:.0%}): ingest pauses"
        )
        ax.axhline(value, label=label, **LIMIT_STYLES[name])
    if note:
        ax.plot([], [], " ", label=note)  # a legend line of text, never over the data
    ax.set_ylim(0, top)
    ax.set_xlabel("events loaded (thousands)")
    ax.set_ylabel("Redis used_memory (MB)")
    ax.set_title(f"Redis memory: {describe_run(f)}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    save_plot(fig, path)
