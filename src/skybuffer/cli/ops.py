"""The operator's commands: the monitoring stack, audit, capacity, chaos, benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from skybuffer.cli.apps import TOOLS, app, bench_app, chaos_app, stack_app
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    emit_json,
    redis_for_command,
    require_redis,
    settings_for,
    settings_to_read,
    settings_to_start,
)


# --- monitoring stack -------------------------------------------------------------------------
@stack_app.command("up")
def stack_up_cmd(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Start the monitoring: redis_exporter, Prometheus and Alertmanager, on loopback,
    their data in the data dir; prints the pages to open."""
    from skybuffer.observability.pages import pages_to_open
    from skybuffer.observability.stack import stack_up

    for name, url in pages_to_open(stack_up(settings_to_start(data_dir, config))).items():
        typer.echo(f"{name:<14} {url}")


@stack_app.command("down")
def stack_down_cmd(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Stop the monitoring programs this data dir started (and only those)."""
    from skybuffer.observability.stack import stack_down

    for name, state in stack_down(settings_to_read(data_dir, config)).items():
        typer.echo(f"{name:<14} {state}")


@stack_app.command("status")
def stack_status_cmd(
    data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """Show which monitoring programs run, where, and whether alerts reach Slack."""
    from skybuffer.observability.stack import stack_status

    info = stack_status(settings_to_read(data_dir, config))
    if as_json:
        emit_json(info)
    else:
        from skybuffer.cli.tables import stack_table
        from skybuffer.console import console

        console.print(stack_table(info))


# --- operations toolkit: audit, capacity, chaos (reports in {data_dir}/reports) ---------------


def show_report(report: Any, as_json: bool) -> None:
    """Print an ops report (JSON, or tables and where its files are); exit with its code."""
    if as_json:
        emit_json(report.as_json())
    else:
        from skybuffer.ops.report import print_report

        print_report(report)
    raise typer.Exit(report.exit_code)


@app.command(rich_help_panel=TOOLS)
def audit(
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="default (the redis.conf skybuffer ships) or met27 (the MET-27 "
            "requirements skybuffer was built against: 2 GB, allkeys-lru).",
        ),
    ] = "default",
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Check the running Redis's settings: PASS, WARN or FAIL each, why, and the fix.

    Exits 1 when a check FAILs."""
    from skybuffer.ops.audit import PROFILES, run_audit

    if profile not in PROFILES:
        raise typer.BadParameter(f"--profile must be one of {', '.join(PROFILES)}")
    s = settings_to_read(data_dir, config)
    require_redis(s)
    show_report(run_audit(s, profile), as_json)


@app.command(rich_help_panel=TOOLS)
def capacity(
    events: Annotated[int, typer.Option("--events", help="Events to load.")] = 2_700_000,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure how many events fit in Redis: load realistic events into scratch keys,
    measure memory, then read every one back and verify it.

    The report projects 8 hours at 350 events/s (10,080,000 events, as `audit` counts
    them) and 2.7M events (the MET-27 requirement, and the default load)."""
    from skybuffer.ops.capacity import run_capacity

    s = settings_to_start(data_dir, config)
    with redis_for_command(s):
        report = run_capacity(s, events, show_progress=not as_json)
    show_report(report, as_json)


@chaos_app.command("memory")
def chaos_memory(
    events: Annotated[int, typer.Option("--events", help="Events offered.")] = 600_000,
    maxmemory: Annotated[str, typer.Option("--maxmemory", help="Scratch limit.")] = "32mb",
    ingest_rate: Annotated[float, typer.Option("--ingest-rate", help="ev/s.")] = 40_000,
    drain_rate: Annotated[float, typer.Option("--drain-rate", help="ev/s.")] = 10_000,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Fill a scratch Redis past its memory limit and count the loss: skybuffer's
    noeviction with backpressure against allkeys-lru."""
    from skybuffer.ops.chaos.memory import run_chaos_memory

    s = settings_for(data_dir, config)
    show_report(run_chaos_memory(s, events, maxmemory, ingest_rate, drain_rate), as_json)


@chaos_app.command("restart")
def chaos_restart(
    events: Annotated[int, typer.Option("--events", help="Acked before the kill.")] = 200_000,
    rate: Annotated[float, typer.Option("--rate", help="Write rate, ev/s.")] = 20_000,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Kill a scratch Redis mid-write (appendfsync everysec and always) and compare the
    events it confirmed with those it recovered."""
    from skybuffer.ops.chaos.restart import run_chaos_restart

    show_report(run_chaos_restart(settings_for(data_dir, config), events, rate), as_json)


@chaos_app.command("forget")
def chaos_forget(
    events: Annotated[int, typer.Option("--events", help="Source events per run.")] = 60_000,
    rate: Annotated[float, typer.Option("--rate", help="Source pace, ev/s.")] = 4_000,
    seconds: Annotated[
        float, typer.Option("--seconds", help="How much of its recent past Redis forgets.")
    ] = 1.0,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="jetstream (through the local Jetstream-protocol server) and/or replay "
            "(straight from a file); both by default.",
        ),
    ] = None,
    restore: Annotated[
        bool,
        typer.Option(
            "--restore",
            help="Bring Redis back from a copy of its AOF taken --seconds earlier (a "
            "restored older snapshot) instead of its AOF cut back (a host crash).",
        ),
    ] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Make Redis forget its last seconds in the middle of a run, and check every event
    still reaches the lake exactly once (lost, duplicated, replayed, recovery time)."""
    from skybuffer.ops.chaos.forget import SOURCES, run_chaos_forget

    chosen = tuple(source or SOURCES)
    for name in chosen:
        if name not in SOURCES:
            raise typer.BadParameter(f"--source must be one of {', '.join(SOURCES)}")
    s = settings_for(data_dir, config)
    show_report(run_chaos_forget(s, events, rate, seconds, chosen, restore), as_json)


@chaos_app.command("sustained")
def chaos_sustained(
    minutes: Annotated[float, typer.Option("--minutes", help="Duration.")] = 10.0,
    rate: Annotated[float, typer.Option("--rate", help="Ingest rate, ev/s.")] = 1_000,
    window: Annotated[float, typer.Option("--window", help="Seconds per window.")] = 60.0,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Ingest and drain at once at a steady rate, for minutes: latency, memory and
    throughput over time."""
    from skybuffer.ops.chaos.sustained import run_sustained

    s = settings_to_start(data_dir, config)
    with redis_for_command(s):
        report = run_sustained(s, minutes, rate, window, show_progress=not as_json)
    show_report(report, as_json)


# --- benchmarks -------------------------------------------------------------------------------
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


@bench_app.command("ingest")
def bench_ingest_cmd(
    events: Annotated[int, typer.Option("--events", help="Realistic events to ingest.")] = 500_000,
    source: Annotated[
        str, typer.Option("--source", help="synthetic (in memory) or jetstream (local server).")
    ] = "synthetic",
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure how fast the ingester fills Redis, and Redis bytes per event, beside one
    XADD per event and redis-benchmark; on a scratch Redis removed afterwards."""
    s = settings_for(data_dir, config)
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
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Measure the writer's speed and peak memory draining --events realistic events.

    Into a temporary lake, from a scratch Redis removed afterwards; beside a reference
    run in the same conditions (the same events as NDJSON through pyarrow.json and
    pyarrow.parquet, in a child process); with Parquet bytes per event per type."""
    from skybuffer.ops.bench.write import bench_write

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
    with redis_for_command(s):
        report = run_bench_redis(s, ops, clients)
    show_report(report, as_json)
