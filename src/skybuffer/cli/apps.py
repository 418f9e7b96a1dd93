"""The Typer application and its command groups (commands register in their modules)."""

from __future__ import annotations

import typer

from skybuffer.errors import EXIT_CODES

EXIT_CODES_HELP = "Exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items())

app = typer.Typer(
    help="Bluesky Jetstream -> Redis Streams buffer -> hive-partitioned Parquet lake.",
    epilog=EXIT_CODES_HELP + ".",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
redis_app = typer.Typer(help="The managed redis-server of a data dir.", no_args_is_help=True)
stack_app = typer.Typer(
    help="The local monitoring stack: redis_exporter, Prometheus, Alertmanager.",
    no_args_is_help=True,
)
bench_app = typer.Typer(
    help="Benchmarks: JSON and a table, each beside the baseline it is compared with.",
    no_args_is_help=True,
)
chaos_app = typer.Typer(
    help="Chaos experiments: memory pressure, Redis crash and restart, sustained load.",
    no_args_is_help=True,
)
deadletter_app = typer.Typer(
    help="Dead letters: the events the pipeline could not take, kept whole. A letter is one "
    "event, or a bundle of one buffered entry's events that share a reason. Export writes each "
    "event as a JSON line (the letter's id, time, reason, source, detail, the event's index and "
    "text, or raw_base64 when it is not UTF-8); replay puts the events this version accepts back "
    "into the buffer exactly once (after a fix, or for letters an older version wrote), and the "
    "DataWriter's next run takes them to the lake; events still rejected stay dead letters.",
    no_args_is_help=True,
)
app.add_typer(redis_app, name="redis")
app.add_typer(stack_app, name="stack")
app.add_typer(bench_app, name="bench")
app.add_typer(chaos_app, name="chaos")
app.add_typer(deadletter_app, name="deadletter")
