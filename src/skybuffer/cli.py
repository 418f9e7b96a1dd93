"""The `skybuffer` command: parse, build settings, call one function, show the result."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from skybuffer.errors import SkybufferError
from skybuffer.settings import Settings, load_settings

app = typer.Typer(
    help="Bluesky Jetstream -> Redis Streams buffer -> hive-partitioned Parquet lake.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
redis_app = typer.Typer(help="The managed redis-server of a data dir.", no_args_is_help=True)
app.add_typer(redis_app, name="redis")
stack_app = typer.Typer(
    help="The local monitoring stack: redis_exporter, Prometheus, Alertmanager.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")
bench_app = typer.Typer(
    help="Benchmarks: JSON and a table, each beside the baseline it is compared with.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="SKYBUFFER_DATA_DIR", help="Holds redis, lake, spool, "
                 "reports (default ./var).", show_default=False),
]  # fmt: skip
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", envvar="SKYBUFFER_CONFIG", help="TOML settings file."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")]
SourceOpt = Annotated[
    str,
    typer.Option("--source", help="jetstream (live Bluesky; --url for one server), or offline: "
                 "synthetic (realistic generated events) or replay (--file)."),
]  # fmt: skip
RateOpt = Annotated[
    float | None,
    typer.Option("--rate", help="Events per second (0 = as fast as possible; default 1500)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Synthetic source seed.")]
CountOpt = Annotated[int | None, typer.Option("--count", help="Stop after N events.")]
FileOpt = Annotated[Path | None, typer.Option("--file", help="JSONL or JSONL.zst to replay.")]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="One Jetstream server (ws://... or wss://.../subscribe) instead "
                 "of the configured hosts, e.g. a local `skybuffer replay-server`."),
]  # fmt: skip
CollectionsOpt = Annotated[
    str | None,
    typer.Option("--collections", help="wantedCollections: a comma-separated list, or 'all' "
                 "(default: posts, likes, reposts, follows, blocks)."),
]  # fmt: skip


def split_collections(value: str | None) -> list[str] | None:
    """--collections: None keeps the setting, 'all' means no filter."""
    if value is None:
        return None
    names = [c.strip() for c in value.split(",") if c.strip()]
    return [] if names == ["all"] else names


def settings_for(data_dir: Path | None, config: Path | None, **overrides: Any) -> Settings:
    return load_settings(data_dir=data_dir, config=config, **overrides)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# --- redis -----------------------------------------------------------------------------------
@redis_app.command("start")
def redis_start(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Start the managed redis-server (waits until the AOF is loaded)."""
    from skybuffer.buffer.server import ManagedRedis

    s = settings_for(data_dir, config)
    server = ManagedRedis(s.redis, s.redis_dir)
    started = server.start()
    word = "started" if started else "already running"
    typer.echo(f"redis-server {word} on {s.redis.host}:{s.redis.port} (data in {s.redis_dir})")


@redis_app.command("stop")
def redis_stop(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """SHUTDOWN the managed redis-server (the AOF is fsync'd first)."""
    from skybuffer.buffer.server import ManagedRedis

    s = settings_for(data_dir, config)
    stopped = ManagedRedis(s.redis, s.redis_dir).stop()
    typer.echo("redis-server stopped" if stopped else "redis-server was not running")


@redis_app.command("status")
def redis_status(
    data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """Is the managed redis-server running, and where."""
    from skybuffer.buffer.server import ManagedRedis

    s = settings_for(data_dir, config)
    server = ManagedRedis(s.redis, s.redis_dir)
    info = {
        "running": server.is_serving(),
        "pid": server.pid(),
        "host": s.redis.host,
        "port": s.redis.port,
        "dir": str(s.redis_dir),
        "external_url_set": bool(s.redis.url),
    }
    if as_json:
        emit_json(info)
    else:
        typer.echo(
            f"redis-server {'running' if info['running'] else 'not running'}"
            f" on {s.redis.host}:{s.redis.port}, pid {info['pid']}, dir {s.redis_dir}"
        )
    raise typer.Exit(0 if info["running"] else 1)


# --- ingest and status -----------------------------------------------------------------------
@app.command()
def ingest(
    source: SourceOpt = "jetstream",
    count: CountOpt = None,
    rate: RateOpt = None,
    seed: SeedOpt = None,
    file: FileOpt = None,
    url: UrlOpt = None,
    collections: CollectionsOpt = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Ingest events into the Redis buffer (until --count, the end of --file, or Ctrl-C)."""
    from skybuffer.pipeline.runner import run_ingest

    s = settings_for(data_dir, config)
    run_ingest(
        s, source, count=count, rate=rate, seed=seed, file=file, stop=threading.Event(),
        url=url, collections=split_collections(collections),
    )  # fmt: skip


@app.command()
def status(data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False) -> None:
    """Buffered events and oldest age per type, Redis memory, dead letters, spool."""
    from skybuffer.pipeline.status import collect_status

    s = settings_for(data_dir, config)
    figures = collect_status(s)
    if as_json:
        emit_json(figures.as_dict())
    else:
        from skybuffer.console import console, status_table

        console.print(status_table(figures))


@app.command()
def run(
    source: SourceOpt = "jetstream",
    rate: RateOpt = None,
    seed: SeedOpt = None,
    file: FileOpt = None,
    url: UrlOpt = None,
    collections: CollectionsOpt = None,
    stack: Annotated[
        bool, typer.Option("--stack/--no-stack", help="Start the monitoring stack if installed.")
    ] = True,
    writer: Annotated[
        bool,
        typer.Option("--writer/--no-writer", help="Serve the scheduled DataWriter (Prefect)."),
    ] = True,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Run the whole pipeline with a live status line (Ctrl-C stops it cleanly).

    Starts, in order: the managed Redis, a local Prefect server, the scheduled DataWriter,
    the monitoring stack (when installed) and the ingester.
    """
    from skybuffer.pipeline.runner import run_pipeline

    s = settings_for(data_dir, config)
    run_pipeline(
        s, source, rate=rate, seed=seed, file=file, url=url,
        collections=split_collections(collections), stack=stack, writer=writer,
    )  # fmt: skip


@app.command()
def serve(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Serve only the scheduled DataWriter and its /metrics.

    For deployments where ingest runs elsewhere; needs PREFECT_API_URL.
    """
    from skybuffer.pipeline.flows import serve_datawriter

    serve_datawriter(settings_for(data_dir, config))


@app.command("replay-server")
def replay_server(
    file: Annotated[Path, typer.Option("--file", help="events.jsonl or events.jsonl.zst")],
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1.")] = 6008,
    rate: Annotated[
        float, typer.Option("--rate", help="Events/s per client (0 = as fast as it reads).")
    ] = 0.0,
    loop: Annotated[
        bool, typer.Option("--loop", help="Start over after the last event, time_us shifted.")
    ] = False,
    outbox: Annotated[
        int,
        typer.Option(
            "--outbox",
            help="Messages queued per client before a slow one is dropped (with --rate), "
            "as Jetstream does.",
        ),
    ] = 10_000,
) -> None:
    """Serve a file over Jetstream's v1 /subscribe protocol on loopback (Ctrl-C stops it)."""
    from skybuffer.sources.replay_server import run_replay_server

    run_replay_server(file, port=port, rate=rate, loop=loop, outbox=outbox)


# --- monitoring stack -------------------------------------------------------------------------
@stack_app.command("up")
def stack_up_cmd(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Start redis_exporter, Prometheus and Alertmanager (loopback, data in the data dir)."""
    from skybuffer.observability.stack import stack_up

    for name, url in stack_up(settings_for(data_dir, config)).items():
        typer.echo(f"{name:<14} {url}")


@stack_app.command("down")
def stack_down_cmd(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Stop the stack processes this data dir started (by their pids)."""
    from skybuffer.observability.stack import stack_down

    for name, state in stack_down(settings_for(data_dir, config)).items():
        typer.echo(f"{name:<14} {state}")


@stack_app.command("status")
def stack_status_cmd(
    data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """Which stack processes run, where, and whether Slack is configured."""
    from skybuffer.observability.stack import stack_status

    info = stack_status(settings_for(data_dir, config))
    if as_json:
        emit_json(info)
    else:
        for name, value in info.items():
            typer.echo(f"{name:<14} {value}")


# --- operations toolkit: audit, capacity, chaos (reports in {data_dir}/reports) ---------------
chaos_app = typer.Typer(
    help="Chaos experiments: memory pressure, Redis crash and restart, sustained load.",
    no_args_is_help=True,
)
app.add_typer(chaos_app, name="chaos")


def show_report(report: Any, as_json: bool) -> None:
    """Print an ops report (JSON, or tables and where its files are); exit with its code."""
    if as_json:
        emit_json(report.as_json())
    else:
        from skybuffer.ops.report import print_report

        print_report(report)
    raise typer.Exit(report.exit_code)


@app.command()
def audit(
    profile: Annotated[
        str, typer.Option("--profile", help="default (shipped redis.conf) or met27 (the seed's).")
    ] = "default",
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Check the live Redis against a profile: PASS/WARN/FAIL, reason, fix (exit 1 on FAIL)."""
    from skybuffer.ops.audit import PROFILES, run_audit

    if profile not in PROFILES:
        raise typer.BadParameter(f"--profile must be one of {', '.join(PROFILES)}")
    show_report(run_audit(settings_for(data_dir, config), profile), as_json)


@app.command()
def capacity(
    events: Annotated[int, typer.Option("--events", help="Events to load.")] = 2_700_000,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """The 8-hour buffer test: load, measure memory, read back and verify every event."""
    from skybuffer.ops.capacity import run_capacity

    s = settings_for(data_dir, config)
    show_report(run_capacity(s, events, show_progress=not as_json), as_json)


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
    """Fill a scratch Redis past its limit: noeviction+backpressure vs allkeys-lru, loss."""
    from skybuffer.ops.chaos import run_chaos_memory

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
    """SIGKILL a scratch Redis mid-write (everysec and always): acknowledged vs recovered."""
    from skybuffer.ops.recovery import run_chaos_restart

    show_report(run_chaos_restart(settings_for(data_dir, config), events, rate), as_json)


@chaos_app.command("sustained")
def chaos_sustained(
    minutes: Annotated[float, typer.Option("--minutes", help="Duration.")] = 10.0,
    rate: Annotated[float, typer.Option("--rate", help="Ingest rate, ev/s.")] = 1_000,
    window: Annotated[float, typer.Option("--window", help="Seconds per window.")] = 60.0,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Concurrent ingest and drain at a steady rate: latency, memory, throughput over time."""
    from skybuffer.ops.sustained import run_sustained

    s = settings_for(data_dir, config)
    show_report(run_sustained(s, minutes, rate, window, show_progress=not as_json), as_json)


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
    """Ingest throughput and Redis bytes/event vs the seed's XADD-per-event and
    redis-benchmark, on a scratch redis-server that is removed afterwards."""
    s = settings_for(data_dir, config)
    if source == "jetstream":
        from skybuffer.sources.bench_jetstream import bench_jetstream_ingest

        result = bench_jetstream_ingest(events, s)
    else:
        from skybuffer.ops.bench import bench_ingest

        result = bench_ingest(events, s.redis, s.ingest)
    show_bench(f"bench ingest ({source})", result, as_json)


@bench_app.command("write")
def bench_write_cmd(
    events: Annotated[int, typer.Option("--events", help="Buffered events to drain.")] = 1_000_000,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """DataWriter throughput: drain N buffered realistic events into a temporary lake
    (scratch redis-server, removed afterwards); Parquet bytes per event per type."""
    from skybuffer.lake.bench import bench_write

    result = bench_write(events, settings_for(data_dir, config))
    show_bench("bench write", result, as_json)


@bench_app.command("codec")
def bench_codec_cmd(
    file: Annotated[Path, typer.Option("--file", help="JSONL file of events.", exists=True)],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Redis bytes per event of a file's events through the codec vs plain JSON."""
    from skybuffer.ops.bench import bench_codec

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
    """The seed's baseline on the live Redis: SET/GET, XADD/XREADGROUP ops/s and latency."""
    from skybuffer.ops.baseline import run_bench_redis

    show_report(run_bench_redis(settings_for(data_dir, config), ops, clients), as_json)


# --- write and query (the DataWriter and the lake) -------------------------------------------
TypesOpt = Annotated[
    list[str] | None,
    typer.Option("--type", help="Only this type (repeatable): posts, likes, reposts, follows, "
                 "blocks, other."),
]  # fmt: skip


def show_drain(result: Any, as_json: bool) -> None:
    """Per-type rows, files, bytes and time of one drain; errors on stderr."""
    from skybuffer.console import console, err_console, figures_table, human_bytes

    if as_json:
        emit_json(result.as_dict())
    else:
        rows = [
            {"type": t, "rows": r.rows, "files": r.files, "bytes": human_bytes(r.bytes),
             "dead letters": r.deadletters, "seconds": round(r.seconds, 2),
             "status": "failed" if r.error else "budget used up" if r.budget_exhausted else "ok"}
            for t, r in result.types.items()
        ]  # fmt: skip
        table = figures_table("skybuffer write", rows)
        table.caption = f"{result.rows:,} rows in {result.seconds:.2f} s"
        console.print(table)
    for type_, error in result.errors.items():
        err_console.print(f"[bold red]{type_}:[/] {error}")


@app.command()
def write(
    once: Annotated[
        bool, typer.Option("--once", help="Drain what is buffered now, then exit (the default).")
    ] = False,
    loop: Annotated[
        bool, typer.Option("--loop", help="Drain every --interval seconds until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between drains (--loop).")
    ] = 300.0,
    types: TypesOpt = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Drain the Redis buffer into the hive-partitioned Parquet lake, exactly once."""
    from skybuffer.pipeline.datawriter import drain_once, run_loop
    from skybuffer.pipeline.runner import install_stop_handlers

    if once and loop:
        raise typer.BadParameter("choose one of --once and --loop")
    s = settings_for(data_dir, config)
    if loop:
        stop = threading.Event()
        install_stop_handlers(stop)
        run_loop(s, interval, stop, on_result=lambda result: show_drain(result, as_json))
        return
    result = drain_once(s, types)
    show_drain(result, as_json)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def query(
    sql: Annotated[
        str,
        typer.Argument(help="SQL over the views posts, likes, reposts, follows, blocks and other."),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array of row objects.")
    ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV with a header row.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Query the lake with DuckDB (hive partitions year, month, day, hour are columns)."""
    from skybuffer.lake.query import run_query, to_csv, to_json

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    result = run_query(settings_for(data_dir, config).lake, sql)
    if as_json:
        sys.stdout.write(to_json(result) + "\n")
    elif as_csv:
        sys.stdout.write(to_csv(result))
    else:
        from skybuffer.console import console, rows_table

        console.print(rows_table(result.columns, result.rows))


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except SkybufferError as exc:
        from skybuffer.console import err_console

        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
