"""`skybuffer ingest` and `skybuffer run` in the terminal: a progress bar or a live
status line (log lines printed above it), the summary at the end, where everything is.
The services and the ingester themselves are pipeline/services.py's and runner.py's."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.live import Live

from skybuffer.cli.tables import live_line
from skybuffer.console import err_console, human_bytes
from skybuffer.constants import WS_LAST_DURATION, WS_LAST_RUN, WS_LAST_SUCCESS
from skybuffer.observability.status import BufferView
from skybuffer.observability.writer_stats import lake_totals
from skybuffer.pipeline.runner import (
    IngestThread,
    build_ingester,
    install_stop_handlers,
    serve_ingest_metrics,
    supervise,
)
from skybuffer.pipeline.services import Services
from skybuffer.pipeline.tally import IngestStats
from skybuffer.settings import Settings


class RateMeter:
    """Events per second over the last interval."""

    def __init__(self, stats: Callable[[], IngestStats]) -> None:
        """``stats``: the run's figures now (a partitioned ingest adds its lanes' up)."""
        self.stats = stats
        self._last = (time.monotonic(), stats().events)

    def rate(self) -> float:
        now, events = time.monotonic(), self.stats().events
        then, before = self._last
        self._last = (now, events)
        return (events - before) / (now - then) if now > then else 0.0


def run_ingest(
    settings: Settings,
    source_kind: str,
    *,
    stop: threading.Event,
    count: int | None = None,
    rate: float | None = None,
    seed: int | None = None,
    file: Path | None = None,
    url: str | None = None,
    collections: list[str] | None = None,
    wait_for_lease: bool = False,
    partitions: list[int] | None = None,
) -> IngestStats:
    """`skybuffer ingest`: a progress bar for counted runs, a summary at the end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    serve_ingest_metrics(settings)
    install_stop_handlers(stop)
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(
        "[progress.description]{task.description}",
        *columns,
        console=err_console,
        disable=count is None,
    )
    with bar as progress:
        task = progress.add_task("ingest", total=count)
        ingester = build_ingester(
            settings,
            source_kind,
            count=count,
            rate=rate,
            seed=seed,
            file=file,
            on_batch=lambda stats: progress.update(task, completed=stats.events),
            url=url,
            collections=collections,
            wait_for_lease=wait_for_lease,
            partitions=partitions,
        )
        thread = IngestThread(ingester, stop)
        supervise(thread, stop, tick=lambda: None, every=0.5)
    err_console.print(summary(ingester.stats, source_kind), highlight=False)
    return ingester.stats


def run_pipeline(
    settings: Settings,
    source_kind: str,
    *,
    rate: float | None = None,
    seed: int | None = None,
    file: Path | None = None,
    url: str | None = None,
    collections: list[str] | None = None,
    stack: bool = True,
    writer: bool = True,
) -> None:
    """`skybuffer run`: Redis, Prefect, the scheduled DataWriter, the monitoring stack and
    the ingester, with a live status line; Ctrl-C stops them all cleanly, in order."""
    stop = threading.Event()
    install_stop_handlers(stop)
    with Services(settings, stack=stack, writer=writer) as services:
        serve_ingest_metrics(settings)
        ingester = build_ingester(
            settings, source_kind, rate=rate, seed=seed, file=file, url=url, collections=collections
        )
        view = BufferView(settings)
        _announce(settings, services.urls)
        meter = RateMeter(lambda: ingester.stats)
        live_context = Live(console=err_console, refresh_per_second=2, transient=False)
        with logs_above(sys.stderr, live_context) as live:

            def tick() -> None:
                try:
                    figures = view.status()
                    writer_line = _writer_line(view.writer_stats(), services)
                    live.update(live_line(meter.rate(), figures, writer_line))
                except Exception as exc:  # noqa: BLE001 - the status line must not kill the run
                    live.update(f"status unavailable: {exc}")

            supervise(IngestThread(ingester, stop), stop, tick)
        stopped = summary(ingester.stats, source_kind)
        err_console.print(f"{stopped}; stopping services…", highlight=False)


SOURCE_ITEMS = {"replay": "lines", "jetstream": "messages", "synthetic": "generated events"}
"""What one item a source hands on is called, in summaries."""


def summary(stats: IngestStats, source_kind: str) -> str:
    """What the run took, valid events and dead letters apart, and from how many of the
    source's items: "ingested 2,000 events (+ 3 dead letters) from 2,003 lines ..."."""
    items = SOURCE_ITEMS.get(source_kind, "items")
    rate = stats.events / stats.elapsed if stats.elapsed else 0.0
    types = ", ".join(f"{t} {n:,}" for t, n in sorted(stats.by_type.items()) if n)
    line = (
        f"ingested {stats.events:,} events (+ {stats.deadletters:,} dead letters) from "
        f"{stats.received:,} {items} in {stats.elapsed:.1f} s ({rate:,.0f} events/s)"
        + (f": {types}" if types else "")
    )
    if stats.rewinds:
        line += (
            f"; Redis forgot {stats.forgotten:,} confirmed events, read again from the source "
            f"({stats.rewinds} rewinds)"
        )
    return line


@contextmanager
def logs_above(stderr: TextIO, live: Live) -> Iterator[Live]:
    """Run ``live`` with log lines printed above its status line, never glued onto it.

    Live redirects ``sys.stderr`` to print above itself (in a terminal), but logging's
    handlers keep the stream they were given at start: those that wrote to ``stderr``
    are pointed at the redirected one while it runs, and given theirs back after."""
    with live:
        handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is stderr
        ]
        if sys.stderr is not stderr:
            for handler in handlers:
                handler.setStream(sys.stderr)
        try:
            yield live
        finally:
            for handler in handlers:
                handler.setStream(stderr)


def _writer_line(stats: dict[str, float], services: Services) -> str:
    """Last DataWriter run (state, duration, rows) and the lake's size."""
    if not services.writer_alive():
        return "datawriter: serving process exited (see prefect/serve.log)"
    rows, size = lake_totals(stats)
    lake = human_bytes(size)
    if WS_LAST_RUN not in stats:
        return f"datawriter: no run yet │ lake {lake}"
    ok = stats.get(WS_LAST_SUCCESS) == stats[WS_LAST_RUN]
    age = time.time() - stats[WS_LAST_RUN]
    state = "ok" if ok else "FAILED"
    return (
        f"datawriter: {state} {age:.0f}s ago in {stats.get(WS_LAST_DURATION, 0):.1f}s │ "
        f"lake {rows:,} rows {lake}"
    )


def _announce(settings: Settings, urls: dict[str, str]) -> None:
    """Where each part of the running pipeline is."""
    where = dict(urls)
    if settings.metrics.ingest_port:
        where["ingest metrics"] = (
            f"http://{settings.metrics.host}:{settings.metrics.ingest_port}/metrics"
        )
    where["lake"] = str(settings.lake.root)
    for name, value in where.items():
        err_console.print(f"[bold]{name:<15}[/] {value}")
    err_console.print("Ctrl-C stops the pipeline cleanly.")
