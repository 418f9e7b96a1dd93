"""`skybuffer chaos failover`: the primary of a local Redis topology is killed mid-run."""

from __future__ import annotations

from typing import Annotated

import typer

from skybuffer.cli.apps import chaos_app
from skybuffer.cli.options import ConfigFile, DataDir, JsonOut, emit_json, settings_for


@chaos_app.command("failover")
def chaos_failover(
    mode: Annotated[
        str, typer.Option("--mode", help="The topology: sentinel (cluster: not yet supported).")
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
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Kill the primary of a scratch sentinel topology in the middle of a run, and check
    the pipeline goes on by itself with every event in the lake exactly once (lost,
    duplicated, failovers, recovery time)."""
    from skybuffer.ops.failover import MODES, SOURCES, run_chaos_failover

    if mode not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)} (cluster: not yet)")
    if source not in SOURCES:
        raise typer.BadParameter(f"--source must be one of {', '.join(SOURCES)}")
    report = run_chaos_failover(settings_for(data_dir, config), events, rate, source, mode)
    if as_json:
        emit_json(report.as_json())
    else:
        from skybuffer.ops.report import print_report

        print_report(report)
    raise typer.Exit(report.exit_code)
