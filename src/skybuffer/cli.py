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
    str, typer.Option("--source", help="synthetic (realistic generated events) or replay (--file).")
]
RateOpt = Annotated[
    float | None,
    typer.Option("--rate", help="Events per second (0 = as fast as possible; default 1500)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Synthetic source seed.")]
CountOpt = Annotated[int | None, typer.Option("--count", help="Stop after N events.")]
FileOpt = Annotated[Path | None, typer.Option("--file", help="JSONL or JSONL.zst to replay.")]


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
    source: SourceOpt = "synthetic",
    count: CountOpt = None,
    rate: RateOpt = None,
    seed: SeedOpt = None,
    file: FileOpt = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Ingest events into the Redis buffer (until --count, the end of --file, or Ctrl-C)."""
    from skybuffer.pipeline.runner import run_ingest

    s = settings_for(data_dir, config)
    run_ingest(s, source, count=count, rate=rate, seed=seed, file=file, stop=threading.Event())


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
    source: SourceOpt = "synthetic",
    rate: RateOpt = None,
    seed: SeedOpt = None,
    file: FileOpt = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Run the pipeline: managed Redis, ingest, live status. Ctrl-C stops it cleanly."""
    from skybuffer.pipeline.runner import run_pipeline

    s = settings_for(data_dir, config)
    run_pipeline(s, source, rate=rate, seed=seed, file=file)


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
