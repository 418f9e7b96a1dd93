"""`skybuffer deadletter list|show|export|replay`: the events the pipeline could not take."""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from skybuffer.buffer.deadletter import DeadLetterStore, Selection
from skybuffer.cli.apps import PlainUsage, deadletter_app
from skybuffer.cli.options import (
    ConfigFile,
    DataDir,
    JsonOut,
    emit_json,
    redis_for_command,
    require_redis,
    settings_to_read,
    settings_to_start,
)
from skybuffer.errors import ConfigError, RedisUnavailable
from skybuffer.settings import Settings

ReasonOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--reason",
        help="Only letters of this reason (repeat for several), "
        "e.g. invalid_utf8, not_json, undecodable_entry.",
        show_default=False,
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only letters written since: an ISO time (UTC unless it "
        "says otherwise) or an age such as 30m, 6h, 2d.",
        show_default=False,
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until", help="Only letters written until (same forms as --since).", show_default=False
    ),
]
LimitOpt = Annotated[int, typer.Option("--limit", help="List at most N letters (0: all).")]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str | None, now: datetime | None = None) -> int | None:
    """Milliseconds since the epoch of ``--since``/``--until``."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    age = _AGE.match(value.strip())
    if age:
        moment = now - timedelta(**{_UNITS[age.group(2)]: float(age.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(
                f"{value!r} is not a time: give an ISO time such as 2026-12-01T08:00 or an "
                "age such as 30m, 6h, 2d"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def selection(
    reasons: list[str] | None, since: str | None, until: str | None, ids: list[str] | None = None
) -> Selection:
    return Selection(
        frozenset(reasons or ()), parse_time(since), parse_time(until), frozenset(ids or ())
    )


def readable(data_dir: Path | None, config: Path | None) -> Settings:
    """The settings of a data dir whose Redis serves (list, show, export start nothing)."""
    settings = settings_to_read(data_dir, config)
    require_redis(settings)
    return settings


Stores = list[tuple[str, DeadLetterStore]]
"""The dead-letter store of each partition, by its name ("" unpartitioned)."""


@contextmanager
def dead_letters(settings: Settings) -> Iterator[Stores]:
    """The dead-letter store of each partition of a data dir's Redis; never starts a
    server. A partitioned buffer's letter IDs are shown as ``{partition}/{id}``."""
    from skybuffer.buffer.partitions import Partitions
    from skybuffer.buffer.topology import connect

    partitions = Partitions.of_settings(settings.redis)
    stores: Stores = []
    try:
        for number in range(partitions.count):
            keys = partitions.keys(number)
            client = connect(settings.redis, settings.redis_dir, keys.prefix)
            stores.append((partitions.name(number), DeadLetterStore(client, keys)))
        yield stores
    except RedisUnavailable as exc:
        where = (
            settings.redis.url
            and "the Redis of SKYBUFFER_REDIS__URL"
            or (f"the managed Redis of {settings.data_dir}")
        )
        raise RedisUnavailable(
            f"cannot reach {where} ({exc}); start it with `skybuffer redis start`"
        ) from None
    finally:
        for _, store in stores:
            store.client.close()


def qualified(partition: str, letter_id: str) -> str:
    return f"{partition}/{letter_id}" if partition else letter_id


def _store_of(stores: Stores, letter_id: str) -> tuple[DeadLetterStore, str]:
    """The store a (qualified) letter ID belongs to, and its ID there."""
    partition, _, bare = letter_id.rpartition("/")
    for name, store in stores:
        if name == partition:
            return store, bare
    names = ", ".join(n for n, _ in stores)
    raise ConfigError(
        f"no dead letter {letter_id!r}: letters of a partitioned buffer are named "
        f"PARTITION/ID with PARTITION one of {names} (`skybuffer deadletter list` shows them)"
    )


def _for_store(chosen: Selection, partition: str) -> Selection | None:
    """``chosen`` with only the IDs of one partition's letters (bare); None when --id
    names none of them."""
    if not chosen.ids:
        return chosen
    mine = {i.rpartition("/")[2] for i in chosen.ids if i.rpartition("/")[0] == partition}
    return replace(chosen, ids=frozenset(mine)) if mine else None


@deadletter_app.command("list")
def list_letters(
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = 50,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Dead letters, oldest first, and how many events each reason holds."""
    from skybuffer.pipeline.deadletters import Summary

    chosen = selection(reason, since, until)
    with dead_letters(readable(data_dir, config)) as stores:
        summary, shown = Summary(), list[dict[str, Any]]()
        for name, store in stores:
            for letter in store.scan(chosen):
                summary.add(letter)
                if not limit or len(shown) < limit:
                    shown.append(letter.as_dict() | {"id": qualified(name, letter.id)})
    if as_json:
        emit_json({"summary": summary.as_dict(), "letters": shown})
        return
    _print_list(summary.as_dict(), shown)


def _print_list(summary: dict[str, Any], shown: list[dict[str, Any]]) -> None:
    """One line per letter and its detail under it: readable at any terminal width."""
    from rich.markup import escape

    from skybuffer.console import console

    for letter in shown:
        time = letter["time"][:19].replace("T", " ")
        events = f"{letter['events']:,} event" + ("s" if letter["events"] != 1 else "")
        console.print(
            f"[bold]{letter['id']}[/]  {time}  {letter['reason']}  from {letter['source']}  "
            f"{events}  {letter['bytes']:,} B"
        )
        if letter["detail"]:
            console.print(f"    [dim]{escape(letter['detail'][:300])}[/]")
    counts = ", ".join(
        f"{r} {c['events']:,} events in {c['letters']:,} letters"
        for r, c in summary["by_reason"].items()
    )
    line = f"{summary['letters']:,} dead letters ({summary['events']:,} events)"
    line += f": {counts}" if counts else ""
    if len(shown) < summary["letters"]:
        line += f"; {len(shown):,} listed (--limit 0 lists all)"
    console.print(line)


@deadletter_app.command("show", cls=PlainUsage)
def show(
    letter_id: Annotated[
        str,
        typer.Argument(metavar="LETTER_ID", help="The letter's ID, as `deadletter list` shows it."),
    ],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """One dead letter: reason, detail, and each event it holds (non-UTF-8 bytes escaped)."""
    from skybuffer.buffer.codec import Decoder
    from skybuffer.pipeline.deadletters import letter_records

    with dead_letters(readable(data_dir, config)) as stores:
        store, bare = _store_of(stores, letter_id)
        letter = store.get(bare)
    if letter is None:
        raise ConfigError(f"no dead letter {letter_id!r}: `skybuffer deadletter list` shows them")
    records = letter_records(letter, Decoder())
    if as_json:
        emit_json(letter.as_dict() | {"id": letter_id, "records": records})
        return
    typer.echo(json.dumps(letter.as_dict() | {"id": letter_id}, indent=2))
    for record in records:
        shown = record["event"]
        if shown is None:
            raw = base64.b64decode(record["raw_base64"])
            shown = raw.decode("utf-8", "backslashreplace")
        typer.echo(f"--- event {record['index']}\n{shown}")


@deadletter_app.command("export")
def export(
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="JSONL file to write (default: standard output)."),
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """The selected letters' events as JSON Lines (the letters stay where they are)."""
    from skybuffer.pipeline.deadletters import export_records

    chosen = selection(reason, since, until)
    with dead_letters(readable(data_dir, config)) as stores:
        handle = open(output, "w") if output else sys.stdout  # noqa: SIM115
        written = 0
        try:
            for name, store in stores:
                for record in export_records(store, chosen):
                    record["letter"] = qualified(name, record["letter"])
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    written += 1
        finally:
            if output:
                handle.close()
    if output:
        typer.echo(f"exported {written:,} dead-lettered events to {output}", err=True)


@deadletter_app.command("replay")
def replay(
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    letter_ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="Only this letter (repeat for several).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed; change nothing.")
    ] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Put the events this version accepts back into the buffer, exactly once."""
    from skybuffer.pipeline.deadletters import Replayer, merged

    s = settings_to_start(data_dir, config)
    chosen = selection(reason, since, until, letter_ids)
    with redis_for_command(s), dead_letters(s) as stores:
        results = []
        for name, store in stores:
            mine = _for_store(chosen, name)
            if mine is None:
                continue
            replayer = Replayer(store, s.ingest)
            try:
                results.append(replayer.replay(mine, dry_run))
            finally:
                replayer.close()
    figures = merged(results, dry_run).as_dict()
    if as_json:
        emit_json(figures)
        return
    verb = "would replay" if dry_run else "replayed"
    rejected = ", ".join(f"{r} {n:,}" for r, n in figures["still_rejected_by_reason"].items())
    line = (
        f"{verb} {figures['requeued_events']:,} events from {figures['replayed_letters']:,} of "
        f"{figures['letters']:,} letters"
    )
    if rejected:
        line += f"; still rejected: {rejected}"
    if figures["undecodable_events"]:
        line += f"; {figures['undecodable_events']:,} events still undecodable"
    if figures["gone"]:
        line += f"; {figures['gone']:,} letters replayed meanwhile by another process"
    typer.echo(line)
