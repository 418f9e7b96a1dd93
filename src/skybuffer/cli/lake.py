"""`skybuffer lake status|seal|verify|forget`: the lake's hours, sealing them, checking
them, removing an account (lake/inventory.py, pipeline/sealing.py, pipeline/erasing.py)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer

from skybuffer.cli.apps import lake_app
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    emit_json,
    redis_for_command,
    settings_to_read,
    settings_to_start,
)


@lake_app.command("status")
def lake_status(
    data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """Every hour of every type: sealed, open (still receiving) or late (sealed, with late
    events waiting for the next seal), and its files, rows and bytes."""
    from dataclasses import asdict

    from skybuffer.lake.inventory import lake_hours

    s = settings_to_read(data_dir, config)
    hours = lake_hours(s.lake)
    if as_json:
        emit_json({"root": s.lake.root, "hours": [asdict(h) for h in hours]})
        return
    from skybuffer.console import console, figures_table, human_bytes

    rows = [
        {
            "type": h.type,
            "hour": h.hour,
            "state": h.state,
            "files": h.files,
            "rows": h.rows,
            "bytes": human_bytes(h.bytes),
        }
        for h in hours
    ]
    console.print(figures_table(f"lake {s.lake.root}", rows))
    states = Counter(h.state for h in hours)
    console.print(
        ", ".join(f"{n:,} {state}" for state, n in sorted(states.items())) or "no data yet"
    )


@lake_app.command("seal")
def lake_seal(
    data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """Seal every hour nothing more can arrive for, and fold late events into sealed hours.

    Needs the buffer (to know what can still arrive): starts the data dir's Redis for the
    command if it is not running. Safe to stop at any moment: the next run finishes or
    redoes an interrupted seal."""
    from skybuffer.pipeline.faults import Faults
    from skybuffer.pipeline.sealing import seal_ready

    s = settings_to_start(data_dir, config)
    with redis_for_command(s):
        report = seal_ready(s, checkpoint=Faults(s.writer.fault).at)
    if as_json:
        emit_json(report.as_dict())
        return
    figures = report.as_dict()
    typer.echo(
        f"sealed {figures['hours_sealed']:,} hours and folded late events into "
        f"{figures['late_folded']:,} ({figures['rows']:,} rows, "
        f"{figures['duplicates_dropped']:,} duplicates dropped) in {figures['seconds']:.1f}s; "
        f"{figures['waiting']:,} open hours not ready yet"
    )


@lake_app.command("verify")
def lake_verify(
    data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """Check every sealed hour against its manifest (files, sizes, checksums, rows, no
    event twice) and look for gaps (hours with no data); exit 1 on any problem, so it
    fits cron and CI. Reads files only: needs no Redis."""
    from skybuffer.lake.inventory import record_verify, verify_lake

    s = settings_to_read(data_dir, config)
    report = verify_lake(s.lake)
    record_verify(s.lake, report)
    if as_json:
        emit_json(report.as_dict())
    else:
        for problem in report.problems:
            typer.echo(f"{problem.type} {problem.hour}: {problem.problem}", err=True)
        verdict = "ok" if report.ok else f"{len(report.problems)} problems"
        typer.echo(
            f"lake verify: {verdict}; {report.sealed_hours:,} sealed hours, "
            f"{report.open_hours:,} open, {report.late_files:,} late files waiting"
        )
    if not report.ok:
        raise typer.Exit(1)


@lake_app.command("forget")
def lake_forget(
    did: Annotated[
        list[str] | None,
        typer.Option(
            "--did",
            help="The account to remove (did:plc:… or did:web:…); repeat for several. "
            "None given: finish the requests a stopped run left pending.",
        ),
    ] = None,
    keep_out: Annotated[
        bool,
        typer.Option(
            "--keep-out",
            help="Also keep the account's later events out of the lake (by default only "
            "what it sent up to now is removed, and kept out when replayed).",
        ),
    ] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Remove an account's rows from the lake, sealed and open hours, for takedown and
    erasure requests: exactly once, and safe to stop at any moment (the next `lake forget`
    or sealing run finishes it). The running DataWriters keep the account's buffered and
    replayed events out. Only the account's own records go: others' likes of its posts
    or follows of it stay. Reads no Redis."""
    from skybuffer.pipeline.erasing import forget
    from skybuffer.pipeline.faults import Faults

    s = settings_to_read(data_dir, config)
    report = forget(s, did or [], keep_out, checkpoint=Faults(s.writer.fault).at)
    if as_json:
        emit_json(report.as_dict())
        return
    for erasure in report.finished:
        removed = sum(erasure.rows_removed.values())
        typer.echo(f"forgot {erasure.did}: {removed:,} rows removed")
    pending = [e.did for e in report.requests if e.pending]
    typer.echo(
        f"{len(report.requests):,} accounts forgotten in this lake"
        + (f", {len(pending)} pending: {', '.join(pending)}" if pending else "")
        + f" ({report.seconds:.1f}s)"
    )
