"""Options every command shares, and the helpers that turn them into settings and output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from skybuffer.errors import ConfigError, RedisUnavailable
from skybuffer.settings import Settings, load_settings

DATA_DIR_HELP = (
    "Holds redis, lake, spool, reports (default: the nearest var/ holding a pipeline, here or "
    "in a parent directory, else ./var)."
)
SOURCE_HELP = (
    "jetstream (live Bluesky; --url for one server), or offline: synthetic (realistic "
    "generated events) or replay (--file)."
)
SEED_HELP = "For --source synthetic: the same seed makes the same events (default 42)."
COUNT_HELP = (
    "Stop after N more events, counted from where the source resumes. Only valid events "
    "count: dead letters are kept too, and reported apart."
)
URL_HELP = (
    "One Jetstream server (ws://... or wss://.../subscribe) instead of the configured hosts, "
    "e.g. a local `skybuffer replay-server`."
)
COLLECTIONS_HELP = (
    "Which records to ask Jetstream for: collection names, comma-separated (e.g. "
    "app.bsky.feed.like), or 'all' (default: posts, likes, reposts, follows, blocks)."
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="SKYBUFFER_DATA_DIR", help=DATA_DIR_HELP, show_default=False),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", envvar="SKYBUFFER_CONFIG", help="TOML settings file."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")]
SourceOpt = Annotated[str, typer.Option("--source", help=SOURCE_HELP)]
RateOpt = Annotated[
    float | None,
    typer.Option("--rate", help="Events per second (0 = as fast as possible; default 1500)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help=SEED_HELP)]
CountOpt = Annotated[int | None, typer.Option("--count", min=1, help=COUNT_HELP)]
FileOpt = Annotated[Path | None, typer.Option("--file", help="JSONL or JSONL.zst to replay.")]
UrlOpt = Annotated[str | None, typer.Option("--url", help=URL_HELP)]
CollectionsOpt = Annotated[str | None, typer.Option("--collections", help=COLLECTIONS_HELP)]


def split_collections(value: str | None) -> list[str] | None:
    """--collections: None keeps the setting, 'all' means no filter."""
    if value is None:
        return None
    names = [c.strip() for c in value.split(",") if c.strip()]
    return [] if names == ["all"] else names


def settings_for(data_dir: Path | None, config: Path | None, **overrides: Any) -> Settings:
    return load_settings(data_dir=data_dir, config=config, **overrides)


def settings_to_read(data_dir: Path | None, config: Path | None) -> Settings:
    """For read-only commands: the settings of a data dir a pipeline has started in;
    NoPipeline otherwise. Nothing is created, nothing started."""
    settings = settings_for(data_dir, config)
    settings.require_pipeline()
    return settings


def settings_to_start(data_dir: Path | None, config: Path | None) -> Settings:
    """For commands that start a service: the data dir's ports claimed (the data dir and
    its record created at the first start)."""
    settings = settings_for(data_dir, config)
    settings.claim_ports()
    return settings


def require_redis(settings: Settings) -> None:
    """For read-only commands: RedisUnavailable, naming the fix, unless the managed Redis
    of the data dir serves (an external one is reached, or not, by the command itself)."""
    from skybuffer.buffer.topology import managed

    if settings.redis.url or managed(settings.redis, settings.redis_dir).is_serving():
        return
    raise RedisUnavailable(
        f"the Redis of {settings.data_dir} is not running: start it with `skybuffer redis "
        "start` (its buffer is kept on disk) or `skybuffer run`"
    )


def one_server_only(settings: Settings, what: str) -> None:
    """The toolkit's single-server experiments measure one Redis: refuse a cluster."""
    if settings.redis.mode == "cluster":
        raise ConfigError(
            f"{what} measures one Redis server and a cluster has several: run it on a "
            "standalone or sentinel data dir; `skybuffer bench ingest|write --mode cluster` "
            "measures a cluster"
        )


@contextmanager
def redis_for_command(settings: Settings) -> Iterator[None]:
    """For commands that need the buffer: the managed Redis of the data dir if it serves;
    else started now, said on stderr, and stopped (SHUTDOWN, the AOF fsync'd) when the
    command ends. An external Redis (redis.url) is used as it is."""
    from skybuffer.buffer.topology import managed
    from skybuffer.console import err_console

    if settings.redis.url or settings.redis.sentinels or settings.redis.cluster_nodes:
        yield
        return
    server = managed(settings.redis, settings.redis_dir)
    if not server.start():
        yield
        return
    err_console.print(
        f"Started redis-server of {settings.data_dir} on {server.address} for this command; "
        "it stops when the command ends (`skybuffer redis start` keeps one running).",
        highlight=False,
    )
    try:
        yield
    finally:
        server.stop()
        err_console.print("Stopped the redis-server this command started.", highlight=False)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def warn(line: str) -> None:
    """A warning an operator must read, on stderr (stdout stays parseable)."""
    from skybuffer.console import err_console

    err_console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
