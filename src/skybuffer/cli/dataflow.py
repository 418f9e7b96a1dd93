"""The pipeline's commands: ingest, status, run, serve, replay-server, write, query."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from skybuffer.cli.apps import LOOK, RUN, PlainUsage, app
from skybuffer.cli.options import (
    CollectionsOpt,
    ConfigFile,
    CountOpt,
    DataDir,
    FileOpt,
    JsonOut,
    RateOpt,
    SeedOpt,
    SourceOpt,
    UrlOpt,
    emit_json,
    redis_for_command,
    require_redis,
    settings_for,
    settings_to_read,
    settings_to_start,
    split_collections,
    warn,
)


# --- ingest and status -----------------------------------------------------------------------
@app.command(rich_help_panel=RUN)
def ingest(
    source: SourceOpt = "jetstream",
    count: CountOpt = None,
    rate: RateOpt = None,
    seed: SeedOpt = None,
    file: FileOpt = None,
    url: UrlOpt = None,
    collections: CollectionsOpt = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="If another ingester owns this source's cursor, wait to take over when it "
            "stops (default: refuse, naming it).",
        ),
    ] = False,
    partition: Annotated[
        list[int] | None,
        typer.Option(
            "--partition",
            help="A partitioned buffer (redis.partitions): run only this partition's lane "
            "(repeatable), so the lanes can run in several processes or hosts; default: "
            "every lane, in this process.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Take events from a source into the Redis buffer, without the writer.

    Runs until --count more events are taken, the end of --file, or Ctrl-C; a next run
    resumes where this one stopped. Events the pipeline refuses become dead letters (see
    `skybuffer deadletter`) and do not count towards --count. A partitioned buffer has
    one lane per partition, each reading the source for its own share of accounts."""
    from skybuffer.cli.live import run_ingest
    from skybuffer.sources import check_source

    check_source(source, file)
    s = settings_to_start(data_dir, config)
    with redis_for_command(s):
        run_ingest(
            s,
            source,
            count=count,
            rate=rate,
            seed=seed,
            file=file,
            stop=threading.Event(),
            url=url,
            collections=split_collections(collections),
            wait_for_lease=wait,
            partitions=partition,
        )


@app.command(rich_help_panel=LOOK)
def status(data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False) -> None:
    """Show what the buffer holds: events and the oldest one's age per type, Redis
    memory, dead letters, and events waiting on disk for Redis."""
    from skybuffer.observability.status import collect_status

    s = settings_to_read(data_dir, config)
    require_redis(s)
    figures = collect_status(s)
    if as_json:
        emit_json(figures.as_dict())
    else:
        from skybuffer.cli.tables import status_table
        from skybuffer.console import console

        console.print(status_table(figures))
    for line in figures.warnings:
        warn(line)


@app.command(rich_help_panel=RUN)
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
    """Run the whole pipeline with a live status line; Ctrl-C stops it cleanly.

    Starts, in order: the data dir's Redis, a local Prefect server (the scheduler), the
    writer that moves the buffer to the lake every few minutes, the monitoring stack (when
    installed) and the ingester; prints where each one is. A second `run` resumes where
    the last one stopped."""
    from skybuffer.cli.live import run_pipeline
    from skybuffer.sources import check_source

    check_source(source, file)
    s = settings_to_start(data_dir, config)
    run_pipeline(
        s,
        source,
        rate=rate,
        seed=seed,
        file=file,
        url=url,
        collections=split_collections(collections),
        stack=stack,
        writer=writer,
    )


@app.command(rich_help_panel=RUN)
def serve(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Run only the scheduled writer (and its /metrics), for a deployment where the
    ingester runs elsewhere.

    Needs a Prefect server: set PREFECT_API_URL to it."""
    from skybuffer.pipeline.flows import serve_datawriter

    serve_datawriter(settings_for(data_dir, config))


@app.command("replay-server", rich_help_panel=RUN)
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
    """Serve a file of events as a local Jetstream server, to test without the network.

    Speaks Jetstream's /subscribe protocol on 127.0.0.1 until Ctrl-C; point
    `skybuffer ingest --url` at it."""
    from skybuffer.testbed.replay_server import run_replay_server

    run_replay_server(file, port=port, rate=rate, loop=loop, outbox=outbox)


# --- write and query (the DataWriter and the lake) -------------------------------------------
TYPES_HELP = "Only this type (repeatable): posts, likes, reposts, follows, blocks, other."
TypesOpt = Annotated[list[str] | None, typer.Option("--type", metavar="TYPE", help=TYPES_HELP)]


def _drain_row(type_: str, r: Any) -> dict[str, Any]:
    """One type's line of a drain: rows, files, bytes, dead letters, time, outcome."""
    from skybuffer.console import human_bytes

    status = "failed" if r.error else "budget used up" if r.budget_exhausted else "ok"
    return {
        "type": type_,
        "rows": r.rows,
        "files": r.files,
        "bytes": human_bytes(r.bytes),
        "dead letters": r.deadletters,
        "seconds": round(r.seconds, 2),
        "status": status,
    }


def show_drain(result: Any, as_json: bool) -> None:
    """Per-type rows, files, bytes and time of one drain; errors on stderr."""
    from skybuffer.console import console, err_console, figures_table

    if as_json:
        emit_json(result.as_dict())
    else:
        rows = [_drain_row(t, r) for t, r in result.types.items()]
        table = figures_table("skybuffer write", rows)
        table.caption = f"{result.rows:,} rows in {result.seconds:.2f} s"
        console.print(table)
    for type_, error in result.errors.items():
        err_console.print(f"[bold red]{type_}:[/] {error}")


@app.command(rich_help_panel=RUN)
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
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="If another DataWriter is draining (a scheduled run, a --loop), wait for "
            "it to finish, as long as a scheduled run may take (the default), or refuse at "
            "once, naming it.",
        ),
    ] = True,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Move what the buffer holds into the lake's Parquet files, each event exactly once.

    The lake is a folder of Parquet files by type and hour (type/year/month/day/hour).
    Only one writer drains a buffer at a time, however it runs (this command, the
    schedule of `skybuffer run`, --loop): a second one waits for its turn. A partitioned
    buffer (redis.partitions) has a writer per partition: this process drains, in
    parallel, those no other writer holds, and --loop takes over a dead writer's."""
    from skybuffer.pipeline.runner import install_stop_handlers
    from skybuffer.pipeline.writers import drain_once, run_loop

    if once and loop:
        raise typer.BadParameter("choose one of --once and --loop")
    s = settings_to_start(data_dir, config)
    if loop:
        stop = threading.Event()
        install_stop_handlers(stop)
        with redis_for_command(s):
            run_loop(s, interval, stop, on_result=lambda result: show_drain(result, as_json))
        return
    with redis_for_command(s):
        result = drain_once(s, types, wait=wait)
    show_drain(result, as_json)
    if not result.ok:
        raise typer.Exit(1)


@app.command(cls=PlainUsage, rich_help_panel=LOOK)
def query(
    sql: Annotated[
        str,
        typer.Argument(
            metavar="SQL",
            help="SQL over the tables posts, likes, reposts, follows, blocks and other "
            "(and posts_current, ...: docs/QUERYING.md).",
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array of row objects.")
    ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV with a header row.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Ask the lake a question in SQL (DuckDB), e.g. "select count(*) from likes".

    Each type is a table; year, month, day and hour are columns too. posts_current,
    likes_current, ... hold the present state (latest version of each record, deletes and
    withdrawn accounts applied), accounts_current each account's state. Results print as a
    table; rows too wide for the terminal print one block per row (column names down the
    left). --json and --csv print everything, for scripts."""
    from skybuffer.lake.query import run_query, to_csv, to_json

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    result = run_query(settings_for(data_dir, config).lake, sql)
    if as_json:
        sys.stdout.write(to_json(result) + "\n")
    elif as_csv:
        sys.stdout.write(to_csv(result))
    else:
        from skybuffer.cli.tables import rows_table
        from skybuffer.console import console

        console.print(rows_table(result.columns, result.rows))
