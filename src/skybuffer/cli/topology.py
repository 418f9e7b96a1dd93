"""`redis status` of a sentinel topology: every node and sentinel, and the primary now."""

from __future__ import annotations

from typing import Any

import typer

from skybuffer.cli.options import emit_json


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
