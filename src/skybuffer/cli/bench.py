"""`skybuffer bench ...`: one command per benchmark of ops/bench/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from skybuffer.cli.apps import bench_app
from skybuffer.cli.ops import show_report
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    emit_json,
    one_server_only,
    redis_for_command,
    settings_for,
    settings_to_start,
)


def show_bench(title: str, result: dict[str, Any], as_json: bool) -> None:
    """Print a benchmark result as JSON or as a two-column table."""
    if as_json:
        emit_json(result)
        return
    from skybuffer.console import console, figures_table

    rows = [{"figure": k, "value": v} for k, v in result.items() if not isinstance(v, dict)]
    console.print(figures_table(title, rows))
    for key, value in result.items():
        if isinstance(value, dict):
            console.print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))


ModeOpt = Annotated[
    str,
    typer.Option(
        "--mode",
        help="standalone (one Redis); cluster: a scratch local Redis Cluster with each "
        "--partitions count, beside standalone in the same run; sentinel: a scratch "
        "sentinel topology without and with WAIT for a replica per batch.",
    ),
]
PartitionsOpt = Annotated[
    str, typer.Option("--partitions", help="Cluster mode: partition counts to measure.")
]


def show_scaling(
    title: str, result: dict[str, Any], columns: tuple[str, ...], as_json: bool
) -> None:
    """The scaling runs as one table, a row per topology and partition count."""
    if as_json:
        emit_json(result)
        return
    from skybuffer.console import console, figures_table

    rows = [{k: run[k] for k in ("topology", "partitions", *columns)} for run in result["runs"]]
    console.print(figures_table(title, rows))
    console.print(
        f"{result['events']:,} events; capacity at {result['firehose_events_per_s']:,} events/s "
        f"and {result['node_maxmemory_bytes'] / 1024**3:.0f} GiB per node"
    )


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"--partitions {text!r}: a comma list of counts, e.g. 1,3,6"
        ) from None
    if not counts or min(counts) < 1:
        raise typer.BadParameter("--partitions needs counts of at least 1, e.g. 1,3,6")
    return counts


SCALING_COLUMNS = ("hours_per_node", "primaries_for_8h", "primaries_for_24h")


@bench_app.command("ingest")
def bench_ingest_cmd(
    events: Annotated[int, typer.Option("--events", help="Realistic events to ingest.")] = 500_000,
    source: Annotated[
        str, typer.Option("--source", help="synthetic (in memory) or jetstream (local server).")
    ] = "synthetic",
    mode: ModeOpt = "standalone",
    partitions: PartitionsOpt = "1,3,6",
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure how fast the ingester fills Redis, and Redis bytes per event, beside one
    XADD per event and redis-benchmark; on a scratch Redis removed afterwards. With --mode
    cluster: ingest into 1, 3 and 6 partitions of a scratch cluster beside standalone,
    and how many nodes hold 8 and 24 hours of the firehose."""
    s = settings_for(data_dir, config)
    if mode in ("cluster", "sentinel"):
        from skybuffer.ops.bench.scaling import bench_scaling

        result = bench_scaling(events, s, _counts(partitions), mode)
        columns = ("replica_acks", "ingest_events_per_s", "bytes_per_event", *SCALING_COLUMNS)
        show_scaling(f"bench ingest --mode {mode}", result, columns, as_json)
        return
    if source == "jetstream":
        from skybuffer.ops.bench.jetstream import bench_jetstream_ingest

        result = bench_jetstream_ingest(events, s)
    else:
        from skybuffer.ops.bench.ingest import bench_ingest

        result = bench_ingest(events, s.redis, s.ingest)
    show_bench(f"bench ingest ({source})", result, as_json)


@bench_app.command("write")
def bench_write_cmd(
    events: Annotated[int, typer.Option("--events", help="Buffered events to drain.")] = 1_000_000,
    mode: ModeOpt = "standalone",
    partitions: PartitionsOpt = "1,3,6",
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure the writer's speed and peak memory draining --events realistic events.

    Into a temporary lake, from a scratch Redis removed afterwards; beside a reference
    run in the same conditions (the same events as NDJSON through pyarrow.json and
    pyarrow.parquet, in a child process); with Parquet bytes per event per type. With
    --mode cluster: drain 1, 3 and 6 partitions of a scratch cluster beside standalone."""
    from skybuffer.ops.bench.write import bench_write

    if mode in ("cluster", "sentinel"):
        from skybuffer.ops.bench.scaling import bench_scaling

        s = settings_for(data_dir, config)
        result = bench_scaling(events, s, _counts(partitions), mode)
        columns = ("drain_events_per_s", "ingest_events_per_s", "bytes_per_event")
        show_scaling(f"bench write --mode {mode}", result, columns, as_json)
        return

    result = bench_write(events, settings_for(data_dir, config))
    show_bench("bench write", result, as_json)


@bench_app.command("codec")
def bench_codec_cmd(
    file: Annotated[Path, typer.Option("--file", help="JSONL file of events.", exists=True)],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure the Redis bytes per event of a file's events, compressed as the buffer
    stores them, against plain JSON."""
    from skybuffer.ops.bench.codec import bench_codec

    s = settings_for(data_dir, config)
    show_bench("bench codec", bench_codec(file, s.redis, s.ingest.batch_events), as_json)


@bench_app.command("redis")
def bench_redis_cmd(
    ops: Annotated[int, typer.Option("--ops", help="Commands per measurement.")] = 10_000,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent clients.")] = 8,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure the running Redis: SET/GET and XADD/XREADGROUP operations per second and
    latency, against the MET-27 targets."""
    from skybuffer.ops.bench.redis import run_bench_redis

    s = settings_to_start(data_dir, config)
    one_server_only(s, "`bench redis`")
    with redis_for_command(s):
        report = run_bench_redis(s, ops, clients)
    show_report(report, as_json)


@bench_app.command("seal")
def bench_seal_cmd(
    hours: Annotated[int, typer.Option("--hours", help="Past hours of lake to write.")] = 24,
    events_per_hour: Annotated[
        int, typer.Option("--events-per-hour", help="Events in each hour (all types).")
    ] = 20_000,
    repeats: Annotated[int, typer.Option("--repeats", help="Timings of each query.")] = 5,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure sealing on a day of lake the DataWriter wrote (one drain per 5-minute run,
    1 % upstream duplicates): files and Parquet bytes per event before and after, seal
    throughput, duplicates dropped, and DuckDB queries over the unsealed copy beside the
    sealed lake (median of --repeats); on a scratch Redis and lake removed afterwards."""
    from skybuffer.ops.bench.seal import bench_seal

    result = bench_seal(hours, events_per_hour, settings_for(data_dir, config), repeats=repeats)
    if as_json:
        emit_json(result)
        return
    from skybuffer.console import console, figures_table

    queries = result.pop("queries")
    show_bench("bench seal", result, as_json=False)
    rows = [{"query": name, **figures} for name, figures in queries.items()]
    console.print(figures_table("DuckDB queries, median seconds: unsealed vs sealed", rows))
