"""The operator's checks: `audit` (ops/audit.py) and `capacity` (ops/capacity.py), and how every
ops report is shown (the chaos and bench commands use it too)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from skybuffer.cli.apps import TOOLS, app
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    emit_json,
    one_server_only,
    redis_for_command,
    require_redis,
    settings_to_read,
    settings_to_start,
)


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
    one_server_only(s, "`capacity`")
    with redis_for_command(s):
        report = run_capacity(s, events, show_progress=not as_json)
    show_report(report, as_json)
