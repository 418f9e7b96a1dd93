"""`skybuffer stack up|down|status`: the local monitoring stack (observability/stack.py)."""

from __future__ import annotations

import typer

from skybuffer.cli.apps import stack_app
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    emit_json,
    settings_to_read,
    settings_to_start,
)


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
