"""The Typer application and its command groups (commands register in their modules)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Bluesky Jetstream -> Redis Streams buffer -> hive-partitioned Parquet lake.",
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
app.add_typer(redis_app, name="redis")
app.add_typer(stack_app, name="stack")
app.add_typer(bench_app, name="bench")
app.add_typer(chaos_app, name="chaos")
