"""`skybuffer chaos ...`: one command per experiment of ops/chaos/."""

from __future__ import annotations

from typing import Annotated

import typer

from skybuffer.cli.apps import chaos_app
from skybuffer.cli.ops import show_report
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    one_server_only,
    redis_for_command,
    settings_for,
    settings_to_start,
)


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
    one_server_only(s, "`chaos sustained`")
    with redis_for_command(s):
        report = run_sustained(s, minutes, rate, window, show_progress=not as_json)
    show_report(report, as_json)


@chaos_app.command("failover")
def chaos_failover(
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="The topology: sentinel (1 primary, 1 replica, 3 sentinels) or cluster "
            "(3 primaries with a replica each, 3 partitions; one primary is killed).",
        ),
    ] = "sentinel",
    events: Annotated[int, typer.Option("--events", min=1000, help="Source events.")] = 40_000,
    rate: Annotated[float, typer.Option("--rate", help="Source pace, ev/s.")] = 3_000,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="jetstream (through the local Jetstream-protocol server) or replay "
            "(straight from a file).",
        ),
    ] = "jetstream",
    replica_lag: Annotated[
        float,
        typer.Option(
            "--replica-lag",
            min=0,
            max=5,
            help="Cluster mode: cut the killed primary's replica off this many seconds before "
            "the kill, so that the promoted replica lacks them (a replica that lagged).",
        ),
    ] = 0.0,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Kill the primary of a scratch sentinel topology (or, in a scratch cluster, the
    primary of one partition's slot) in the middle of a run, and check the pipeline goes
    on by itself with every event in the lake exactly once (lost, duplicated, failovers,
    recovery time)."""
    from skybuffer.ops.chaos.failover import MODES, SOURCES, run_chaos_failover

    if mode not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}")
    if source not in SOURCES:
        raise typer.BadParameter(f"--source must be one of {', '.join(SOURCES)}")
    if replica_lag and mode != "cluster":
        raise typer.BadParameter("--replica-lag applies to --mode cluster only")
    s = settings_for(data_dir, config)
    report = run_chaos_failover(s, events, rate, source, mode, replica_lag)
    show_report(report, as_json)
