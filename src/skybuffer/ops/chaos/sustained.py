"""`skybuffer chaos sustained`: steady ingest and drain for minutes; does anything degrade?

skybuffer's Ingester writes synthetic events at a steady rate into scratch streams
(``{prefix}ops:sustained:``) of the live Redis while skybuffer's StreamConsumer drains
them as fast as it can (XREADGROUP, decode, XACK + XDEL). Per window (a minute by
default) it reports: write latency (one MULTI/EXEC batch), read latency (one read +
commit), delivery lag (read time minus the entry's XADD time), events in and out, and
Redis memory. The verdict compares the windows: a buffer that is fine for ten minutes at
the target rate but whose latency or memory climbs is not fine for eight hours.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from skybuffer.buffer.producer import EncodedBatch, Producer
from skybuffer.buffer.spool import Spool
from skybuffer.buffer.topology import connect
from skybuffer.constants import Keys
from skybuffer.ops.chaos.memory import Drain
from skybuffer.ops.harness import delete_keys, pyplot, save_plot
from skybuffer.ops.report import Plot, Report, Table, percentile, progress, target_of
from skybuffer.pipeline.ingest import Ingester, IngestStats
from skybuffer.settings import Settings
from skybuffer.sources.synthetic import SyntheticSource

DEGRADED_RATIO = 2.0  # last window's P95 over the first one's
DEGRADED_MIN_MS = 5.0  # ...and above this, to ignore sub-millisecond noise
LATENCY_LINES = {
    "write_p50_ms": "write P50",
    "write_p95_ms": "write P95",
    "write_p99_ms": "write P99",
    "read_p95_ms": "read P95",
}


class TimedProducer(Producer):
    """skybuffer's Producer, recording (time, ms) of every batch write."""

    def __init__(self, client: redis.Redis, keys: Keys, source: str) -> None:
        super().__init__(client, keys, source)
        self.writes: list[tuple[float, float]] = []

    def write(self, batch: EncodedBatch) -> bool:
        began = time.monotonic()
        landed = super().write(batch)
        self.writes.append((began, (time.monotonic() - began) * 1000))
        return landed


class Recorder:
    """Samples events accepted and Redis memory once a second from its own thread."""

    def __init__(self, client: redis.Redis, stats: IngestStats, began: float) -> None:
        self.client, self.stats, self.began = client, stats, began
        self.samples: list[tuple[float, int, int]] = []  # seconds, accepted, used_memory
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ops-recorder", daemon=True)

    def _run(self) -> None:
        while not self.halt.is_set():
            used = int(self.client.info("memory")["used_memory"])
            self.samples.append((time.monotonic() - self.began, self.stats.events, used))
            self.halt.wait(1.0)


def run_sustained(
    settings: Settings,
    minutes: float = 10.0,
    rate: float = 1_000.0,
    window_seconds: float = 60.0,
    show_progress: bool = True,
) -> Report:
    """Ingest at ``rate`` and drain concurrently for ``minutes`` on the live Redis."""
    client = connect(settings.redis, settings.redis_dir)
    keys = Keys(Keys(settings.redis.prefix).ops_prefix + "sustained:")
    delete_keys(client, keys.prefix)
    spool_dir = Path(tempfile.mkdtemp(prefix="skybuffer-sustained-spool-"))
    try:
        run = _run(client, keys, settings, minutes * 60, rate, spool_dir, show_progress)
    finally:
        delete_keys(client, keys.prefix)
        shutil.rmtree(spool_dir, ignore_errors=True)
    windows = per_window(run, window_seconds, minutes * 60)
    figures = _figures(run, windows, rate, window_seconds, minutes)
    figures["target"] = target_of(client)
    return _report(figures).write(settings.reports_dir)


def _run(
    client: redis.Redis,
    keys: Keys,
    settings: Settings,
    seconds: float,
    rate: float,
    spool_dir: Path,
    show: bool,
) -> dict[str, Any]:
    producer = TimedProducer(client, keys, "sustained")
    source = SyntheticSource(seed=23, rate=rate)
    ingester = Ingester(producer, source, settings.ingest, Spool(spool_dir, "sustained"))
    drain, stop, began = Drain(client, keys), threading.Event(), time.monotonic()
    recorder = Recorder(client, ingester.stats, began)
    ingest = threading.Thread(target=ingester.run, args=(stop,), name="ops-ingest", daemon=True)
    for thread in (recorder.thread, drain, ingest):
        thread.start()
    with progress(int(seconds), "sustained load (s)", show) as advance:
        while time.monotonic() - began < seconds and ingest.is_alive():
            advance(int(time.monotonic() - began))
            stop.wait(0.5)
    stop.set()
    ingest.join()
    backlog = ingester.stats.events - drain.events
    drain.finish()
    recorder.halt.set()
    recorder.thread.join()
    return {
        "began": began,
        "seconds": time.monotonic() - began,
        "writes": producer.writes,
        "reads": drain.reads,
        "samples": recorder.samples,
        "accepted": ingester.stats.events,
        "drained": drain.events,
        "backlog_at_stop": backlog,
    }


def per_window(run: dict[str, Any], window: float, duration: float) -> list[dict[str, Any]]:
    """Latency percentiles, throughput and memory for each full window of the load: of
    the ``duration`` asked for (or less, if the ingest ended early), never of the final
    drain after it, however long this machine takes for that."""
    began, out = run["began"], []
    for index in range(max(1, int(min(run["seconds"], duration) // window))):
        lo, hi = index * window, (index + 1) * window
        writes = sorted(ms for t, ms in run["writes"] if lo <= t - began < hi)
        reads = [(ms, n, lag) for t, ms, n, lag in run["reads"] if lo <= t - began < hi]
        samples = [(t, acc, used) for t, acc, used in run["samples"] if lo <= t < hi]
        out.append(_window(index, writes, reads, samples, window))
    return out


def _window(
    index: int,
    writes: list[float],
    reads: list[tuple[float, int, float]],
    samples: list[tuple[float, int, int]],
    window: float,
) -> dict[str, Any]:
    """One window's figures from its sorted write latencies, reads and memory samples."""
    return {
        "window": index + 1,
        "write_p50_ms": round(percentile(writes, 50), 2),
        "write_p95_ms": round(percentile(writes, 95), 2),
        "write_p99_ms": round(percentile(writes, 99), 2),
        "read_p95_ms": round(percentile(sorted(r[0] for r in reads), 95), 2),
        "lag_p95_ms": round(percentile(sorted(r[2] for r in reads), 95), 1),
        "in_ev_s": round(_rate_in(samples)),
        "out_ev_s": round(sum(r[1] for r in reads) / window),
        "memory_mb": round(max((u for _, _, u in samples), default=0) / 2**20, 1),
    }


def _rate_in(samples: list[tuple[float, int, int]]) -> float:
    """Accepted events per second between the first and last sample of a window."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return 0.0
    return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])


def verdict_of(windows: list[dict[str, Any]], rate: float, backlog: int) -> list[str]:
    """Reasons the run degraded; empty when it held steady."""
    problems = []
    first, last = windows[0], windows[-1]
    if last["write_p95_ms"] > max(DEGRADED_RATIO * first["write_p95_ms"], DEGRADED_MIN_MS):
        rose = f"write P95 rose from {first['write_p95_ms']} to {last['write_p95_ms']} ms"
        problems.append(rose)
    slow = [w["window"] for w in windows if w["in_ev_s"] < 0.9 * rate]
    if slow:
        problems.append(f"ingest below 90% of {rate:,.0f} ev/s in windows {slow}")
    if backlog > rate * 5:
        problems.append(f"the drain was {backlog:,} events behind at the end")
    if last["memory_mb"] > first["memory_mb"] * 1.5 + 16:
        problems.append(f"memory grew from {first['memory_mb']} to {last['memory_mb']} MB")
    return problems


def _figures(
    run: dict[str, Any], windows: list[dict[str, Any]], rate: float, window: float, minutes: float
) -> dict[str, Any]:
    problems = verdict_of(windows, rate, run["backlog_at_stop"])
    return {
        "minutes": minutes,
        "rate": rate,
        "window_seconds": window,
        "accepted": run["accepted"],
        "drained": run["drained"],
        "lost": run["accepted"] - run["drained"],
        "backlog_at_stop": run["backlog_at_stop"],
        "verdict": "stable" if not problems else "degraded",
        "problems": problems,
        "windows": windows,
        "memory": [{"s": round(t, 1), "used_memory": u} for t, _, u in run["samples"]],
    }


def _report(f: dict[str, Any]) -> Report:
    verdict = f["verdict"] + ("" if not f["problems"] else ": " + "; ".join(f["problems"]))
    counts = f"{f['accepted']:,} / {f['drained']:,} / {f['lost']:,}"
    summary = [
        {"figure": "verdict", "value": verdict},
        {"figure": "accepted / drained / lost", "value": counts},
        {"figure": "target", "value": f"{f['rate']:,.0f} ev/s for {f['minutes']} min"},
    ]
    notes = [
        "write = one ingest batch (MULTI/EXEC of every type's entry, counters and cursor); "
        "read = one XREADGROUP + decode + XACK/XDEL call; lag = read time - XADD time.",
        f"Degraded when the last window's write P95 is > {DEGRADED_RATIO:.0f}x the first "
        f"(and > {DEGRADED_MIN_MS:.0f} ms), ingest falls below 90% of the target, the drain "
        "ends more than 5 s behind, or memory grows by half.",
        "The windows are wall-clock; on a shared machine other load shows up as noise.",
    ]
    return Report(
        command="chaos-sustained",
        title="skybuffer chaos sustained: steady load over time",
        data=f,
        tables=[Table("sustained load", summary), Table("per window", f["windows"])],
        notes=notes,
        plots=[Plot("sustained", lambda path: _plot(f, path))],
        exit_code=0 if f["verdict"] == "stable" and f["lost"] == 0 else 1,
    )


def _plot(f: dict[str, Any], path: Path) -> None:
    """Latency per window, memory over time and throughput per window, one above another."""
    plt = pyplot()
    windows = f["windows"]
    xs = [w["window"] * f["window_seconds"] / 60 for w in windows]
    fig, (lat, mem, thr) = plt.subplots(3, 1, figsize=(8, 8), sharex=False)
    for key, label in LATENCY_LINES.items():
        lat.plot(xs, [w[key] for w in windows], marker="o", label=label)
    lat.set(ylabel="ms", title="Latency per window")
    mem.plot([m["s"] / 60 for m in f["memory"]], [m["used_memory"] / 2**20 for m in f["memory"]])
    mem.set(ylabel="used_memory (MB)", title="Redis memory")
    thr.plot(xs, [w["in_ev_s"] for w in windows], marker="o", label="in (accepted)")
    thr.plot(xs, [w["out_ev_s"] for w in windows], marker="x", label="out (drained)")
    thr.axhline(f["rate"], color="grey", linestyle=":", label="target")
    thr.set(xlabel="minutes", ylabel="events/s", title="Throughput per window")
    for ax in (lat, mem, thr):
        ax.grid(alpha=0.3)
    lat.legend(fontsize=8)
    thr.legend(fontsize=8)
    save_plot(fig, path)
