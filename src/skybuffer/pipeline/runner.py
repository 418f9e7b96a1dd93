"""The ingester as a long-running process: wired to a data dir, on a thread, stopped
cleanly. Ctrl-C or SIGTERM sets one stop event: the source stops, the ingester flushes
what it holds (or spools it), so a second run resumes with nothing lost. The terminal
around it (progress, the live status line) is cli/live.py's.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from skybuffer import metrics
from skybuffer.buffer.lease import Lease
from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.producer import Producer
from skybuffer.buffer.spool import Spool
from skybuffer.buffer.topology import connect
from skybuffer.constants import Keys
from skybuffer.errors import ConfigError
from skybuffer.pipeline.ingest import Ingester, IngestStats
from skybuffer.pipeline.lanes import Lanes, PartitionView, combined
from skybuffer.settings import Settings
from skybuffer.sources import Source, open_source

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

    def __init__(self, ingester: Ingester | Lanes, stop: threading.Event) -> None:
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
    partitions: list[int] | None = None,
) -> Ingester | Lanes:
    """Wire a source, the producer (holding the source's lease) and the spool of a data
    dir into an Ingester; ``count``: N more valid events from where the source resumes.
    A partitioned buffer gets one lane per partition (pipeline/lanes.py), or only those
    of ``partitions``."""
    layout = Partitions.of_settings(settings.redis)
    chosen = _chosen(layout, partitions)

    def source() -> Source:
        return open_source(
            source_kind,
            rate=settings.ingest.rate if rate is None else rate,
            seed=settings.ingest.seed if seed is None else seed,
            file=file,
            url=url,
            collections=collections,
            jetstream=settings.jetstream,
            count=count if layout.partitioned else None,
        )

    if not layout.partitioned:
        keys = Keys(settings.redis.prefix)
        return _lane(
            settings, source(), keys, on_batch=on_batch, wait_for_lease=wait_for_lease, count=count
        )
    if count is not None and source_kind != "synthetic":
        raise ConfigError(
            "--count with a partitioned buffer counts source events, which only the synthetic "
            "source can: use --source synthetic, or leave --count out"
        )
    lanes = Lanes([])
    report = combined(on_batch, lanes)
    for partition in chosen:
        view = PartitionView(source(), layout, partition)
        keys = layout.keys(partition)
        lanes.lanes.append(
            _lane(
                settings,
                view,
                keys,
                on_batch=report,
                wait_for_lease=wait_for_lease,
                name=layout.name(partition),
            )
        )
    return lanes


def _chosen(layout: Partitions, partitions: list[int] | None) -> list[int]:
    """The lanes to run: every partition's, or those asked for (each one that exists)."""
    if not partitions:
        return list(range(layout.count))
    wrong = sorted(p for p in set(partitions) if not 0 <= p < layout.count)
    if wrong or not layout.partitioned:
        raise ConfigError(
            f"--partition {', '.join(map(str, wrong or partitions))}: the buffer has "
            f"{layout.count} partition(s) (redis.partitions), numbered from 0"
            + ("" if layout.partitioned else "; --partition needs a partitioned buffer")
        )
    return sorted(set(partitions))


def _lane(
    settings: Settings,
    source: Source,
    keys: Keys,
    *,
    on_batch: Callable[[IngestStats], None] | None,
    wait_for_lease: bool,
    count: int | None = None,
    name: str = "",
) -> Ingester:
    """The ingester of one key prefix (partition ``name``): its producer, lease, spool."""
    client = connect(settings.redis, settings.redis_dir, keys.prefix)
    Partitions.of_settings(settings.redis).refuse_stranded(client)
    what = f"the ingester of source {source.name}"
    hint = "stop it first, or pass --wait to take over when it stops"
    lease = Lease(client, keys.ingest_lease(source.name), settings.ingest.lease_seconds, what, hint)
    acks = (settings.ingest.replica_acks, settings.ingest.replica_ack_timeout_ms)
    producer = Producer(client, keys, source.name, lease, acks)
    assert settings.ingest.spool_dir is not None
    spool = Spool(settings.ingest.spool_dir, f"{source.name}.{name}" if name else source.name)
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
