"""The Typer application and its command groups (commands register in their modules).

Help reads like a manual: each command's first line says what it is for, commands are
listed in the order a newcomer needs them (``run`` first), in three panels, and
paragraphs are reflowed to the terminal (markdown mode), never cut where the source
line ended.
"""

from __future__ import annotations

import typer
from typer._click import Context
from typer.core import TyperCommand, TyperGroup

from skybuffer.errors import EXIT_CODES

RUN = "Run the pipeline"
LOOK = "Look at it"
TOOLS = "Operator's tools"

ORDER = tuple(
    "run ingest write serve replay-server status query lake deadletter "
    "redis stack audit capacity bench chaos".split()
)
"""The order `skybuffer --help` lists the commands in (unlisted ones come last)."""


class ManualOrder(TyperGroup):
    """Lists commands in ``ORDER``, not in the order their modules registered them."""

    def list_commands(self, ctx: Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


class PlainUsage(TyperCommand):
    """Usage names a required argument plainly (``query [OPTIONS] SQL``): Typer writes
    it in braces, ``{SQL}``, which reads as something to type."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def group(help: str) -> typer.Typer:
    """A command group with the application's help conventions."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


EXIT_CODES_HELP = (
    "Exit codes: " + "; ".join(f"**{code}** {what}" for code, what in EXIT_CODES.items()) + "."
)

app = typer.Typer(
    cls=ManualOrder,
    help="Keep Bluesky's live stream of events without losing one: events from Jetstream "
    "wait in a Redis buffer, and a scheduled writer turns them into Parquet files you can "
    "query.\n\nStart with `skybuffer run` (everything, with a live status line); "
    "`skybuffer status` and `skybuffer query` look at what it holds. Every command takes "
    "`--data-dir` (default: the nearest var/ holding a pipeline, here or above, else ./var): "
    "one data dir is one pipeline, with its own ports.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
redis_app = group("Start, stop or check the Redis server that holds a data dir's buffer.")
stack_app = group(
    "Start, stop or check the local monitoring: redis_exporter, Prometheus, Alertmanager."
)
bench_app = group(
    "Measure throughput and memory; each figure is printed beside what it is compared with."
)
chaos_app = group(
    "Break things on purpose (full memory, a Redis crash, a Redis that forgets, hours of "
    "load) on scratch servers, and count that no event was lost or doubled."
)
deadletter_app = group(
    "Look at, export and replay dead letters: the events the pipeline could not take.\n\n"
    "They are kept whole. A letter is one event, or a bundle of events that arrived "
    "together and were refused for the same reason. `export` writes each event as a JSON "
    "line (the letter's id, time, reason, source, detail, the event's index and text, or "
    "raw_base64 when it is not UTF-8). `replay` puts the events this version accepts back "
    "into the buffer exactly once (after a fix, or for letters an older version wrote); "
    "the writer's next run takes them to the lake, and events still refused stay dead "
    "letters."
)
lake_app = group(
    "Seal and check the lake's hours: a sealed hour is one sorted file per type, each "
    "event once, described by its _manifest.json (rows, time range, files and checksums)."
    "\n\nAn hour is sealed once nothing more can arrive for it (the source's cursor and "
    "everything buffered are past its end by lake.seal_grace_seconds); events that still "
    "arrive late are folded in by the next seal, deduplicated. `lake forget` removes an "
    "account's rows (takedown and erasure requests)."
)
app.add_typer(lake_app, name="lake", rich_help_panel=LOOK)
app.add_typer(redis_app, name="redis", rich_help_panel=TOOLS)
app.add_typer(stack_app, name="stack", rich_help_panel=TOOLS)
app.add_typer(bench_app, name="bench", rich_help_panel=TOOLS)
app.add_typer(chaos_app, name="chaos", rich_help_panel=TOOLS)
app.add_typer(deadletter_app, name="deadletter", rich_help_panel=LOOK)
