"""`skybuffer bench redis`: the seed's baseline, measured the way the seed measured it.

SET/GET and XADD/XREADGROUP, one command per round trip from a Python client (redis-py,
as the seed's pipeline did), first from one client and then from N concurrent clients
(threads sharing one connection pool), each command timed on its own so P50/P95/P99 are
real latencies as an application sees them, GIL included. Memory per entry is measured
with MEMORY USAGE for the seed's one-JSON-event-per-entry layout and for skybuffer's
compressed micro-batches of the same events.

Runs against the live Redis (managed, or ``redis.url``) under the scratch prefix
``{prefix}ops:baseline:``, deleted afterwards. The figures are compared with the MET-27
targets (>= 1,000 ops/s, P50 < 10 ms, P95 < 50 ms) and the seed's measured 1,587 ops/s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from skybuffer.buffer.topology import connect
from skybuffer.constants import Keys
from skybuffer.ops.bench.codec import codec_vs_json
from skybuffer.ops.harness import START_US, delete_keys, pyplot, save_plot
from skybuffer.ops.report import (
    MET27,
    SEED_OPS_PER_S,
    Plot,
    Report,
    Table,
    percentile,
    target_of,
    verdict,
)
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate

OPERATIONS = ("SET", "GET", "XADD", "XREADGROUP")
GROUP = "baseline"
Op = Callable[[int, int], Any]  # (worker, i) -> reply


def run_bench_redis(settings: Settings, ops: int = 10_000, clients: int = 8) -> Report:
    """Measure the live Redis; ``ops`` commands per operation and client count."""
    client = connect(settings.redis, settings.redis_dir)
    prefix = Keys(settings.redis.prefix).ops_prefix + "baseline:"
    events = generate(1, min(ops, 20_000), START_US)
    try:
        delete_keys(client, prefix)
        rows, latencies = measure_all(client, prefix, events, ops, clients)
        memory = memory_per_entry(client, prefix, events)
    finally:
        delete_keys(client, prefix)
    return _report(client, rows, latencies, memory, ops, clients).write(settings.reports_dir)


def measure_all(
    client: redis.Redis, prefix: str, events: list[bytes], ops: int, clients: int
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Each operation from 1 client, then from ``clients`` clients, in the order that makes
    the data the next one needs (SET before GET, XADD before XREADGROUP)."""
    stream = prefix + "stream"
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    table = operations(client, prefix, stream, events)
    rows, latencies = [], {}
    for name in OPERATIONS:
        for n in sorted({1, clients}):
            seconds, samples = run_clients(table[name], n, max(1, ops // n))
            rows.append(_row(name, n, len(samples) / seconds, sorted(samples)))
            latencies[f"{name} x{n}"] = samples
    return rows, latencies


def operations(client: redis.Redis, prefix: str, stream: str, events: list[bytes]) -> dict[str, Op]:
    """One command each, as the seed issued them: no pipelining, one reply per call."""
    n = len(events)

    def key(worker: int, i: int) -> str:
        return f"{prefix}k:{worker}:{i}"

    return {
        "SET": lambda w, i: client.set(key(w, i), events[i % n]),
        "GET": lambda w, i: client.get(key(w, i)),
        "XADD": lambda w, i: client.xadd(stream, {"json": events[i % n]}),
        "XREADGROUP": lambda w, i: client.xreadgroup(GROUP, f"c{w}", {stream: ">"}, count=1),
    }


def run_clients(op: Op, clients: int, per_client: int) -> tuple[float, list[float]]:
    """Run ``op`` ``per_client`` times on each of ``clients`` threads; wall seconds and
    every call's latency in ms."""
    results: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def work(worker: int) -> None:
        samples, clock = results[worker], time.perf_counter
        start.wait()
        for i in range(per_client):
            began = clock()
            op(worker, i)
            samples.append((clock() - began) * 1000)

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, [s for r in results for s in r]


def _row(name: str, clients: int, rate: float, samples: list[float]) -> dict[str, Any]:
    p50, p95, p99 = (round(percentile(samples, q), 3) for q in (50, 95, 99))
    ok = rate >= MET27["ops_per_s"] and p50 < MET27["p50_ms"] and p95 < MET27["p95_ms"]
    return {
        "operation": name,
        "clients": clients,
        "ops_per_s": round(rate),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "vs_seed": f"x{rate / SEED_OPS_PER_S:.1f}",
        "met27": verdict(ok),
    }


def memory_per_entry(client: redis.Redis, prefix: str, events: list[bytes]) -> dict[str, float]:
    """Redis bytes per event: the seed's layout (one JSON entry each) vs skybuffer's codec."""
    codec, json_bytes = codec_vs_json(client, prefix + "memory:", events)
    set_key = prefix + "memory:set"
    client.set(set_key, events[0])
    return {
        "events": len(events),
        "mean_event_bytes": round(sum(map(len, events)) / len(events), 1),
        "json_entry_bytes": round(json_bytes / len(events), 1),
        "codec_bytes_per_event": round(codec / len(events), 1),
        "set_key_bytes": float(client.memory_usage(set_key, samples=0) or 0),
    }


def _report(
    client: redis.Redis,
    rows: list[dict[str, Any]],
    latencies: dict[str, list[float]],
    memory: dict[str, float],
    ops: int,
    clients: int,
) -> Report:
    data = {
        "target": target_of(client),
        "ops_per_measurement": ops,
        "clients": clients,
        "results": rows,
        "memory": memory,
        "met27_targets": {k: v for k, v in MET27.items() if k != "maxmemory_bytes"},
        "seed_ops_per_s": SEED_OPS_PER_S,
        "all_pass": all(r["met27"] == "PASS" for r in rows),
    }
    layouts = {
        "seed: one JSON event per stream entry": memory["json_entry_bytes"],
        "skybuffer: compressed micro-batch entries": memory["codec_bytes_per_event"],
        "one event as a string key (SET)": memory["set_key_bytes"],
    }
    memory_rows = [{"layout": name, "bytes per event": value} for name, value in layouts.items()]
    notes = [
        "Each command is one round trip from redis-py, as the seed issued them; latencies are "
        "per call as the application sees them (GIL and thread scheduling included).",
        f"MET-27: >= {MET27['ops_per_s']:,} ops/s, P50 < {MET27['p50_ms']:.0f} ms, P95 < "
        f"{MET27['p95_ms']:.0f} ms; vs_seed compares with the seed's {SEED_OPS_PER_S:,} ops/s.",
        "N clients are threads sharing one pool: on a small machine they measure the client as "
        "much as Redis. skybuffer itself never writes one event per command (bench ingest).",
        f"Memory: the same {int(memory['events']):,} realistic events "
        f"(mean {memory['mean_event_bytes']:.0f} B of JSON) in each layout (MEMORY USAGE).",
    ]
    tables = [
        Table("bench redis: ops/s and latency", rows),
        Table("Redis memory per event", memory_rows),
    ]
    return Report(
        command="bench-redis",
        title="skybuffer bench redis: the seed's baseline",
        data=data,
        tables=tables,
        notes=notes,
        plots=[Plot("latency", lambda path: _plot(latencies, path))],
    )


def _plot(latencies: dict[str, list[float]], path: Path) -> None:
    """Latency CDF per operation and client count: the tail shows where a table cannot."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, samples in latencies.items():
        ordered = sorted(samples)
        ys = [(i + 1) / len(ordered) * 100 for i in range(len(ordered))]
        ax.plot(ordered, ys, label=label, linewidth=1.2)
    ax.axvline(MET27["p50_ms"], color="grey", linestyle=":", label="MET-27 P50 10 ms")
    ax.axvline(MET27["p95_ms"], color="black", linestyle=":", label="MET-27 P95 50 ms")
    title = "Redis command latency (redis-py, one round trip per command)"
    ax.set(xscale="log", xlabel="latency per command (ms, log)", ylabel="percent of calls")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    save_plot(fig, path)
