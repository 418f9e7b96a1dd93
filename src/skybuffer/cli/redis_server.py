"""`skybuffer redis start|stop|status`: the Redis of a data dir, standalone or a sentinel
topology (buffer/server.py, buffer/sentinel.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from skybuffer.cli.apps import redis_app
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    emit_json,
    settings_for,
    settings_to_read,
    warn,
)

ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode",
        help="standalone (one server), sentinel (primary + replica + 3 sentinels) or "
        "cluster (3 primaries + 3 replicas); "
        "recorded in the data dir for the commands after (default: the recorded mode).",
        show_default=False,
    ),
]


@redis_app.command("start")
def redis_start(mode: ModeOpt = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Start the data dir's Redis and leave it running (until `skybuffer redis stop`).

    Returns once Redis has loaded its append-only file (AOF, where it keeps the buffer
    across restarts), and warns if that file was cut short, with the bytes it dropped.
    With --mode sentinel: a primary, a replica and three sentinels, once they all see
    each other."""
    from skybuffer.buffer.topology import managed
    from skybuffer.datadir import record_mode

    s = settings_for(data_dir, config, redis={"mode": mode} if mode else None)
    s.claim_ports()
    server = managed(s.redis, s.redis_dir)
    started = server.start()
    record_mode(s.data_dir, s.redis.mode)
    word = "started" if started else "already running"
    if s.redis.mode == "cluster":
        typer.echo(f"redis {server.address} {word} (data in {s.redis_dir})")
        return
    what = "redis sentinel topology" if s.redis.mode == "sentinel" else "redis-server"
    typer.echo(f"{what} {word}, primary on {server.address} (data in {s.redis_dir})")


@redis_app.command("stop")
def redis_stop(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Stop the data dir's Redis cleanly: its append-only file is flushed to disk first
    (sentinel mode: the sentinels first, then every node)."""
    from skybuffer.buffer.aof import aof_health
    from skybuffer.buffer.topology import managed

    s = settings_to_read(data_dir, config)
    server = managed(s.redis, s.redis_dir)
    health = aof_health(server.client("admin")) if server.is_serving() else None
    if health is not None and not health.writing:
        warn(
            "Redis cannot write its AOF: stopping it now loses the "
            f"{health.unwritten_bytes:,} bytes it holds unwritten (its last writes; the "
            "pipeline re-reads them from the source). Free space first to keep them."
        )
    stopped = server.stop()
    typer.echo("redis-server stopped" if stopped else "redis-server was not running")


@redis_app.command("status")
def redis_status(
    data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """Say whether the data dir's Redis runs, on which port, and whether it can write
    (sentinel mode: every node and sentinel, and which node is primary now)."""
    from skybuffer.buffer.aof import aof_health, last_load
    from skybuffer.buffer.server import ManagedRedis

    s = settings_to_read(data_dir, config)
    if s.redis.mode == "sentinel":
        sentinel_status(s, as_json)
    if s.redis.mode == "cluster":
        cluster_status(s, as_json)
    server = ManagedRedis(s.redis, s.redis_dir)
    running = server.is_serving()
    health = aof_health(server.client("admin")) if running else None
    load = last_load(s.redis_dir)
    info = {
        "running": running,
        "pid": server.pid(),
        "host": s.redis.host,
        "port": s.redis.port,
        "dir": str(s.redis_dir),
        "external_url_set": bool(s.redis.url),
        **(health.as_dict() if health is not None else {}),
        "aof_load_truncated": bool(load and load.truncated),
    }
    if as_json:
        emit_json(info)
    else:
        typer.echo(
            f"redis-server {'running' if running else 'not running'}"
            f" on {s.redis.host}:{s.redis.port}, pid {info['pid']}, dir {s.redis_dir}"
        )
        if health is not None and not health.writing:
            warn(
                f"Redis cannot write its AOF: free space on the disk of {s.redis_dir}; "
                "Redis retries by itself every second and takes writes again"
            )
        if load is not None and load.truncated:
            warn(load.describe())
    raise typer.Exit(0 if running else 1)


def sentinel_status(s: Any, as_json: bool) -> None:
    """`redis status` of the sentinel topology; exits 0 when a primary serves."""
    from skybuffer.buffer.sentinel import SentinelTopology

    topology = SentinelTopology(s.redis, s.redis_dir)
    info = topology.status()
    info["running"] = topology.is_serving()
    if as_json:
        emit_json(info)
    else:
        typer.echo(
            f"redis sentinel topology {'running' if info['running'] else 'not running'}, "
            f"primary {info['primary'] or 'unknown'} (master {info['master_name']!r})"
        )
        for node in info["nodes"]:
            state = node["role"] or ("running" if node["running"] else "not running")
            typer.echo(f"  {node['node']} {node['address']} pid {node['pid']}: {state}")
        for sentinel in info["sentinels"]:
            alive = "running" if sentinel["pid"] else "not running"
            typer.echo(
                f"  {sentinel['sentinel']} {sentinel['address']} pid {sentinel['pid']}: {alive}"
            )
    raise typer.Exit(0 if info["running"] else 1)


def cluster_status(s: Any, as_json: bool) -> None:
    """`redis status` of the cluster; exits 0 when its state is ok."""
    from skybuffer.buffer.cluster import ClusterTopology

    topology = ClusterTopology(s.redis, s.redis_dir)
    info = topology.status()
    info["running"] = info["cluster_state"] == "ok"
    if as_json:
        emit_json(info)
    else:
        typer.echo(f"redis cluster state {info['cluster_state'] or 'unknown (no node answers)'}")
        for node in info["nodes"]:
            state = node["role"] or ("running" if node["running"] else "not running")
            slots = f", slots {' '.join(node['slots'])}" if node["slots"] else ""
            typer.echo(f"  {node['node']} {node['address']} pid {node['pid']}: {state}{slots}")
    raise typer.Exit(0 if info["running"] else 1)
