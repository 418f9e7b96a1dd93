"""Long-running processes: the ingester on a thread, a live status line, clean shutdown.

`skybuffer run` and `skybuffer ingest` use this. Ctrl-C or SIGTERM sets one stop event:
the source stops, the ingester flushes what it holds (or spools it), then the managed
Redis is shut down with its AOF fsync'd, so a second run resumes with nothing lost.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from rich.live import Live

from skybuffer import metrics
from skybuffer.buffer.lease import Lease
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.server import connect
from skybuffer.buffer.spool import Spool
from skybuffer.console import err_console, human_bytes, live_line
from skybuffer.constants import Keys
from skybuffer.observability.status import buffer_status
from skybuffer.observability.writer_stats import read_stats
from skybuffer.pipeline.ingest import Ingester, IngestStats
from skybuffer.pipeline.services import Services
from skybuffer.settings import Settings
from skybuffer.sources import open_source

log = logging.getLogger(__name__)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``; a second Ctrl-C exits at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("Stopping: finishing the batch in flight (Ctrl-C again to abort).")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class IngestThread(threading.Thread):
    """Runs an Ingester until ``stop``; keeps the error that ended it, if any."""

    def __init__(self, ingester: Ingester, stop: threading.Event) -> None:
        super().__init__(name="ingest", daemon=True)
        self.ingester = ingester
        self.stop = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.ingester.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
            self.stop.set()


class RateMeter:
    """Events per second over the last interval."""

    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats
        self._last = (time.monotonic(), stats.events)

    def rate(self) -> float:
        now, events = time.monotonic(), self.stats.events
        then, before = self._last
        self._last = (now, events)
        return (events - before) / (now - then) if now > then else 0.0


def supervise(
    thread: IngestThread, stop: threading.Event, tick: Callable[[], None], every: float = 1.0
) -> None:
    """Call ``tick`` every ``every`` seconds until the ingest thread ends."""
    thread.start()
    while thread.is_alive():
        thread.join(timeout=every)
        if thread.is_alive():
            tick()
    if thread.error is not None:
        raise thread.error


# --- the commands ------------------------------------------------------------------------------
def build_ingester(
    settings: Settings,
    source_kind: str,
    *,
    count: int | None = None,
    rate: float | None = None,
    seed: int | None = None,
    file: Path | None = None,
    on_batch: Callable[[IngestStats], None] | None = None,
    url: str | None = None,
    collections: list[str] | None = None,
    wait_for_lease: bool = False,
) -> Ingester:
    """Wire a source, the producer (holding the source's lease) and the spool of a data
    dir into an Ingester; ``count``: N more valid events from where the source resumes."""
    client = connect(settings.redis, settings.redis_dir)
    source = open_source(
        source_kind,
        rate=settings.ingest.rate if rate is None else rate,
        seed=settings.ingest.seed if seed is None else seed,
        file=file,
        url=url,
        collections=collections,
        jetstream=settings.jetstream,
    )
    keys = Keys(settings.redis.prefix)
    what = f"the ingester of source {source.name}"
    hint = "stop it first, or pass --wait to take over when it stops"
    key = keys.ingest_lease(source.name)
    lease = Lease(client, key, settings.ingest.lease_seconds, what, hint)
    producer = Producer(client, keys, source.name, lease)
    assert settings.ingest.spool_dir is not None
    spool = Spool(settings.ingest.spool_dir, source.name)
    return Ingester(
        producer,
        source,
        settings.ingest,
        spool,
        on_batch=on_batch,
        wait_for_lease=wait_for_lease,
        count=count,
    )


def serve_ingest_metrics(settings: Settings) -> None:
    """The ingester's /metrics, on the data dir's port (chosen at its first start)."""
    settings.claim_ports()
    metrics.serve(
        settings.metrics.host, settings.metrics.ingest_port, "ingest_metrics", settings.data_dir
    )


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
) -> IngestStats:
    """`skybuffer ingest`: a progress bar for counted runs, a summary at the end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    serve_ingest_metrics(settings)
    install_stop_handlers(stop)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err_console, disable=count is None,
    ) as progress:  # fmt: skip
        task = progress.add_task("ingest", total=count)
        ingester = build_ingester(
            settings, source_kind, count=count, rate=rate, seed=seed, file=file,
            on_batch=lambda stats: progress.update(task, completed=stats.events),
            url=url, collections=collections, wait_for_lease=wait_for_lease,
        )  # fmt: skip
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
            settings, source_kind, rate=rate, seed=seed, file=file, url=url,
            collections=collections,
        )  # fmt: skip
        client = connect(settings.redis, settings.redis_dir)
        keys = Keys(settings.redis.prefix)
        _announce(settings, services.urls)
        meter = RateMeter(ingester.stats)
        live_context = Live(console=err_console, refresh_per_second=2, transient=False)
        with logs_above(sys.stderr, live_context) as live:

            def tick() -> None:
                try:
                    figures = buffer_status(client, keys, settings.ingest.spool_dir)
                    writer_line = _writer_line(read_stats(client, keys), services)
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
    lake = human_bytes(sum(v for k, v in stats.items() if k.startswith("bytes:")))
    rows = int(sum(v for k, v in stats.items() if k.startswith("rows:")))
    if "last_run" not in stats:
        return f"datawriter: no run yet │ lake {lake}"
    ok = stats.get("last_success") == stats["last_run"]
    age = time.time() - stats["last_run"]
    state = "ok" if ok else "FAILED"
    return (
        f"datawriter: {state} {age:.0f}s ago in {stats.get('last_duration', 0):.1f}s │ "
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
