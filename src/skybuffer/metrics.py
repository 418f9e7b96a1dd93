"""Every Prometheus metric skybuffer exports, declared once.

Names follow ``skybuffer_<stage>_<what>_<unit>``; label sets are small and fixed
(``type`` is one of the six event types, ``reason`` a dead-letter reason code).
docs/METRICS.md lists each metric with the alert that uses it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from skybuffer.datadir import ensure_free, port_of, recorded_ports
from skybuffer.errors import PortInUse

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
# process_start_time_seconds & co: the alert rules give a just-started process a grace period.
ProcessCollector(registry=REGISTRY)

# --- ingest -------------------------------------------------------------------------------
INGEST_EVENTS = Counter(
    "skybuffer_ingest_events_total",
    "Events accepted from the source and confirmed by Redis, by type.",
    ["type"],
    registry=REGISTRY,
)
INGEST_BYTES = Counter(
    "skybuffer_ingest_event_bytes_total",
    "Raw JSON bytes of the events confirmed by Redis.",
    registry=REGISTRY,
)
DEADLETTER_EVENTS = Counter(
    "skybuffer_deadletter_events_total",
    "Events sent to the dead-letter stream, by reason code.",
    ["reason"],
    registry=REGISTRY,
)
INGEST_BATCH_SECONDS = Histogram(
    "skybuffer_ingest_batch_seconds",
    "Time from a batch's first event to Redis confirming its transaction.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
INGEST_BACKPRESSURE = Gauge(
    "skybuffer_ingest_backpressure",
    "1 while the ingester has stopped taking events because Redis is full or unreachable.",
    registry=REGISTRY,
)
INGEST_SOURCE_PAUSED = Gauge(
    "skybuffer_ingest_source_paused",
    "1 while the ingester does not read its source, by reason: redis_full, "
    "redis_cannot_persist (AOF disk full), spool_full (at ingest.spool_max_bytes), "
    "spool_error (the spool's disk refused a write).",
    ["reason"],
    registry=REGISTRY,
)
INGEST_REDIS_UP = Gauge(
    "skybuffer_ingest_redis_up",
    "1 when the ingester's last Redis call succeeded.",
    registry=REGISTRY,
)
INGEST_SPOOL_BYTES = Gauge(
    "skybuffer_ingest_spool_bytes",
    "Bytes of batches spooled to disk while Redis was unreachable.",
    registry=REGISTRY,
)
INGEST_PENDING_EVENTS = Gauge(
    "skybuffer_ingest_pending_events",
    "Events held by the ingester (memory queue and spool) and not yet in Redis.",
    registry=REGISTRY,
)
INGEST_LAST_EVENT_TIME = Gauge(
    "skybuffer_ingest_last_success_timestamp_seconds",
    "Unix time of the last batch Redis confirmed.",
    registry=REGISTRY,
)
INGEST_UP = Gauge(
    "skybuffer_ingest_up",
    "1 while the ingester runs.",
    registry=REGISTRY,
)
INGEST_REPLICA_ACK_SHORT = Counter(
    "skybuffer_ingest_replica_ack_short_total",
    "Batches that fewer replicas than ingest.replica_acks acknowledged in time (WAIT).",
    registry=REGISTRY,
)
INGEST_FORGOT = Counter(
    "skybuffer_ingest_buffer_forgot_total",
    "Times Redis came back without batches it had confirmed (the source was rewound).",
    registry=REGISTRY,
)
INGEST_FORGOTTEN_EVENTS = Counter(
    "skybuffer_ingest_forgotten_events_total",
    "Events Redis had confirmed and then forgot; re-read from the source.",
    registry=REGISTRY,
)

# --- source -------------------------------------------------------------------------------
SOURCE_CONNECTED = Gauge(
    "skybuffer_source_connected",
    "1 while the source has a live connection (Jetstream websocket).",
    registry=REGISTRY,
)
SOURCE_RECONNECTS = Counter(
    "skybuffer_source_reconnects_total",
    "Reconnects of the source, by cause.",
    ["cause"],
    registry=REGISTRY,
)
SOURCE_BYTES = Counter(
    "skybuffer_source_received_bytes_total",
    "Bytes received from the source on the wire.",
    registry=REGISTRY,
)
SOURCE_LAG_SECONDS = Gauge(
    "skybuffer_source_lag_seconds",
    "Now minus the time_us of the newest event received.",
    registry=REGISTRY,
)
SOURCE_OVERLAP_DROPPED = Counter(
    "skybuffer_source_overlap_dropped_total",
    "Events received again after a resume (the rewind overlap) and dropped as already taken.",
    registry=REGISTRY,
)

# --- datawriter ---------------------------------------------------------------------------
WRITER_UP = Gauge(
    "skybuffer_writer_up",
    "1 while the process serving the DataWriter runs.",
    registry=REGISTRY,
)

# skybuffer_writer_* (rows, bytes, files, runs, run duration, last success) and
# skybuffer_buffer_*, skybuffer_deadletter_buffered_events, skybuffer_lake_* are computed
# at scrape time by observability/exporter.py (PipelineCollector), in the process that
# serves the DataWriter: flow runs are subprocesses whose own counters would die with them.


def serve(host: str, port: int | None, service: str, data_dir: Path) -> bool:
    """Expose the registry on http://host:port/metrics (port 0: do nothing); True when
    served. A port the data dir recorded that is held (most likely by a second process of
    the same role in this data dir, such as an ingester of another source) costs this
    process its /metrics, with a warning; a port set explicitly that is held is an error."""
    port = port_of(port, service)
    if not port:
        return False
    try:
        ensure_free(host, port, service, data_dir)
    except PortInUse as exc:
        if recorded_ports(data_dir).get(service) != port:
            raise
        log.warning("%s. This process serves no /metrics.", exc)
        return False
    start_http_server(port, addr=host, registry=REGISTRY)
    return True
