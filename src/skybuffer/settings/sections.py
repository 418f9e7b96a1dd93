"""The settings sections: one model per component, each field documented by its docstring
(docs/CONFIGURATION.md is built from them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from skybuffer.constants import CODEC_LEVEL
from skybuffer.privilege import SLACK_WEBHOOK_ENV
from skybuffer.settings.base import PACKAGE_DIR, Section
from skybuffer.settings.buffer import REDIS_MODES, RedisSettings

__all__ = ["PACKAGE_DIR", "REDIS_MODES", "RedisSettings", "Section"]


class IngestSettings(Section):
    """Batching, backpressure and spooling of the ingester."""

    batch_events: int = Field(default=5000, ge=1)
    """Events per Redis transaction (at most)."""
    linger_seconds: float = Field(default=0.25, ge=0)
    """How long a partial batch may wait for more events before it is written."""
    codec_level: int = Field(default=CODEC_LEVEL, ge=1, le=19)
    """zstd level of buffered entries: 2 measured 127 B/event of payload at 0.34 s per
    300k events on the reference machine; 3 gives 126 B at 0.52 s (docs/BENCHMARKS.md)."""
    max_event_bytes: int = Field(default=1_000_000, ge=256)
    """Larger events go to the dead-letter stream (raw bytes truncated at this size)."""
    high_water: float = Field(default=0.85, gt=0, le=1)
    """Stop taking events when used_memory passes this fraction of maxmemory."""
    low_water: float = Field(default=0.75, gt=0, le=1)
    """Resume below this fraction."""
    lease_seconds: float = Field(default=15.0, ge=1)
    """The ingest lease's expiry (one ingester per source cursor): an ingester that stops
    renewing it is replaced after this long; one killed on this host at once."""
    replica_acks: int = Field(default=0, ge=0)
    """Sentinel or cluster: after each batch, wait until this many replicas have it (Redis
    WAIT), so a failover can lose at most the batch in flight; 0: do not wait (a failover
    then loses what replication had not sent, re-read from the source). Its cost is in
    docs/BENCHMARKS.md."""
    replica_ack_timeout_ms: int = Field(default=1000, ge=1)
    """How long a batch waits for its replica acknowledgements; a batch acknowledged by
    fewer is kept (it is in the primary) and counted in
    skybuffer_ingest_replica_ack_short_total."""
    memory_queue_batches: int = Field(default=64, ge=1)
    """Batches held in memory while Redis is unreachable, before spilling to the spool."""
    backoff_max_seconds: float = 5.0
    """Longest wait between retries while Redis is full or unreachable."""
    spool_dir: Path | None = None
    """Append-only on-disk spool; default {data_dir}/spool."""
    spool_max_bytes: int = Field(default=1024**3, ge=0)
    """The spool's size limit (default 1 GiB; 0: never spool). At the limit the ingester
    stops reading the source, which replays from the cursor later, instead of growing."""
    outage_log_seconds: float = Field(default=60.0, gt=0)
    """While Redis is unreachable or refuses writes, the ingester logs what it holds this
    often (besides once when the outage begins and once when it ends)."""
    rate: float = Field(default=1500.0, ge=0)
    """Synthetic events per second (0 = as fast as possible)."""
    seed: int = 42
    """Seed of the synthetic source (same seed, same events)."""

    @model_validator(mode="after")
    def _water_marks_ordered(self) -> IngestSettings:
        if self.low_water >= self.high_water:
            raise ValueError(
                f"ingest.low_water ({self.low_water}) must be below ingest.high_water "
                f"({self.high_water})"
            )
        return self


JETSTREAM_HOSTS = [
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
]
JETSTREAM_COLLECTIONS = [
    "app.bsky.feed.post",
    "app.bsky.feed.like",
    "app.bsky.feed.repost",
    "app.bsky.graph.follow",
    "app.bsky.graph.block",
]


class JetstreamSettings(Section):
    """The Jetstream v1 source: hosts, filter, resume window, reconnects, compression."""

    urls: list[str] = Field(default_factory=lambda: list(JETSTREAM_HOSTS), min_length=1)
    """/subscribe endpoints in failover order (the four public v1 hosts by default)."""
    collections: list[str] = Field(default_factory=lambda: list(JETSTREAM_COLLECTIONS))
    """wantedCollections; [] (or "all") subscribes to every collection. Identity and
    account events arrive whatever the filter and are buffered as "other"."""
    rewind_seconds: float = Field(default=3.0, gt=0)
    """A resume asks for events from (newest buffered time_us - this) and drops the overlap
    by event identity: events up to this late are not lost (docs/JETSTREAM.md)."""
    failover_guard_seconds: float = Field(default=1.0, ge=0)
    """On a different host, resume this much later than the rewind, because hosts stamp one
    event with different time_us; must be below rewind_seconds."""
    overlap_max_ids: int = Field(default=4096, ge=16)
    """At most this many event identities in the position (6 bytes each); at higher rates
    the rewind shrinks to what they cover."""
    compress: bool = False
    """Ask for zstd frames (Jetstream's dictionary): about half the bytes on the wire."""
    dictionary: Path | None = None
    """zstd dictionary for compress=true; default: the one shipped with skybuffer."""
    receive_timeout_seconds: float = Field(default=30.0, gt=0)
    """Reconnect when no message arrived for this long (a silent connection)."""
    ping_interval_seconds: float | None = Field(default=20.0, gt=0)
    """WebSocket keepalive ping interval (None disables pings)."""
    ping_timeout_seconds: float | None = Field(default=20.0, gt=0)
    """Close the connection when a ping gets no pong within this long."""
    open_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long opening a websocket connection may take."""
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    """First wait before a reconnect; it doubles (with jitter) on each failure."""
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    """Reconnect delays double from the initial one up to this, with jitter."""
    failures_before_rotate: int = Field(default=3, ge=1)
    """Move to the next URL after this many failed connections in a row."""
    queue_events: int = Field(default=20_000, ge=100)
    """Events read ahead of the ingester; when full the socket is not read (backpressure)."""

    @field_validator("collections", mode="before")
    @classmethod
    def _all_or_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [] if value.strip() == "all" else value.split(",")
        if isinstance(value, list):
            value = [c.strip() for c in value if isinstance(c, str) and c.strip()]
            return [] if value == ["all"] else value
        return value

    @model_validator(mode="after")
    def _guard_below_rewind(self) -> JetstreamSettings:
        if self.failover_guard_seconds >= self.rewind_seconds:
            raise ValueError(
                f"jetstream.failover_guard_seconds ({self.failover_guard_seconds}) must be "
                f"below jetstream.rewind_seconds ({self.rewind_seconds})"
            )
        return self


class WriterSettings(Section):
    """The DataWriter: consumer group reads, batching, claiming, schedule."""

    consumer: str | None = None
    """Consumer name in the 'datawriter' group; unset: writer-{host}-{pid}, one per process
    (the lease holder takes over what other consumers left pending)."""
    lease_seconds: float = Field(default=20.0, ge=1)
    """The DataWriter lease's expiry: a writer that stops renewing it (killed, stalled) is
    replaced after this long; one killed on this host is replaced at once."""
    partition_threads: int = Field(default=2, ge=1)
    """A partitioned buffer: how many partitions one writer process drains at once (each
    thread holds one DataWriter's memory; pipeline/writers.py)."""
    replay_guard_seconds: float = Field(default=86_400.0, gt=0)
    """After Redis forgot, how long the lake drops replayed copies of events it holds
    (cover the source's replay window: Jetstream keeps about a day)."""
    batch_events: int = Field(default=250_000, ge=1)
    """Events per drained batch: bounds the writer's memory."""
    converter: Literal["msgspec", "duckdb"] = "msgspec"
    """How events become rows: ``msgspec`` (lake/rows.py; DuckDB only for the rare lines
    it cannot prove identical, the DataWriter's peak RSS ~250-300 MB) or ``duckdb`` (the
    SQL reference for every line: ~10-15 % less CPU per event, ~200 MB more peak RSS;
    give it ``chunk_bytes`` of 8 MiB, its per-query cost is fixed). The rows are the same."""
    duckdb_threads: int | None = Field(default=None, ge=1)
    """DuckDB threads for the lines the DataWriter's conversion leaves to DuckDB (unset:
    one per core; real Jetstream events need none, and DuckDB is loaded only then)."""
    chunk_bytes: int = Field(default=2**20, ge=1)
    """Decompressed JSON the DataWriter converts at a time (whole entries, at least one):
    its Python rows and Arrow columns grow with it; much smaller chunks cost more per
    event (docs/BENCHMARKS.md). Row groups are bounded by ``lake.row_group_rows`` and
    ``lake.row_group_bytes`` whatever this is."""
    read_count: int = Field(default=200, ge=1)
    """Stream entries per XREADGROUP call."""
    claim_idle_seconds: float = 300.0
    """Age after which a temp file of another writer is stale; consumers without the lease
    (the toolkit's) claim entries pending this long."""
    schedule: str = "*/5 * * * *"
    """Cron expression, or a number of seconds for an interval."""
    budget_seconds: float = 240.0
    """A run must finish within this; it is failed otherwise."""
    fault: str | None = None
    """Test-only fault injection: exit abruptly at a named step."""


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _default_config_dir() -> Path:
    """config/ of the checkout this package runs from (src/skybuffer/../../config)."""
    return PACKAGE_DIR.parent.parent / "config"


def _slack_from_env() -> SecretStr | None:
    value = os.environ.get(SLACK_WEBHOOK_ENV, "").strip()
    return SecretStr(value) if value else None


class StackSettings(Section):
    """Ports, files and secrets of the local monitoring stack.

    Ports left unset are chosen per data dir (datadir.py), never the upstream defaults
    (9090, 9093, 9121), where the Debian packages start system services.
    """

    host: str = "127.0.0.1"
    """Loopback address the stack listens on."""
    prometheus_port: int | None = None
    """Prometheus web/API port; unset: chosen free per data dir (its pipeline.json)."""
    alertmanager_port: int | None = None
    """Alertmanager web/API port; unset: chosen free per data dir (its pipeline.json)."""
    exporter_port: int | None = None
    """redis_exporter /metrics port; unset: chosen free per data dir (its pipeline.json)."""
    config_dir: Path = Field(default_factory=_default_config_dir)
    """Holds prometheus/ and alertmanager/ (the committed config/ of the checkout)."""
    slack_webhook_url: SecretStr | None = Field(default_factory=_slack_from_env)
    """Slack incoming-webhook URL; default from SKYBUFFER_SLACK_WEBHOOK_URL."""
    slack_webhook_file: Path | None = None
    """A file holding the webhook URL (used when slack_webhook_url is unset)."""
    retention: str = "15d"
    """How long Prometheus keeps samples."""
    start_timeout_seconds: float = 30.0
    """How long each program may take to become ready."""
    stop_timeout_seconds: float = 10.0
    """How long each program may take to exit after SIGTERM before SIGKILL."""
    autostart: bool = True
    """`skybuffer run` starts the stack when the binaries are installed."""

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value not in LOOPBACK and not value.startswith("127."):
            raise ValueError(f"stack.host must be a loopback address, not {value!r}")
        return value


class PrefectSettings(Section):
    """The Prefect server `skybuffer run` starts (unless PREFECT_API_URL is set)."""

    api_url: str | None = None
    """An existing Prefect API (http://host:4200/api); default: PREFECT_API_URL, else local."""
    host: str = "127.0.0.1"
    """Address of the local Prefect server's API and UI."""
    port: int | None = None
    """Port of the local Prefect server; unset: chosen free per data dir (its pipeline.json)."""
    start_timeout_seconds: float = 180.0
    """The first start migrates a new SQLite database, which can take a minute."""
    deployment: str = "datawriter"
    """Name of the DataWriter's Prefect deployment."""
    seal_deployment: str = "seal"
    """Name of the sealing flow's Prefect deployment (lake.seal_schedule)."""


class LakeSettings(Section):
    """The Parquet lake."""

    root: str | None = None
    """Local path or URI (s3://bucket/prefix); default {data_dir}/lake."""
    path_template: str = "{type}/year={year}/month={month}/day={day}/hour={hour}"
    """Partition directory under the root; the seed's order is
    'year={year}/month={month}/day={day}/hour={hour}/type={type}'."""
    compression: str = "zstd"
    """Parquet compression codec."""
    compression_level: int = 3
    """Parquet zstd level."""
    row_group_rows: int = 64 * 1024
    """Rows per Parquet row group at most. The DataWriter holds a row group's rows before
    it writes them; ``row_group_bytes`` bounds that memory whatever the rows' size."""
    row_group_bytes: int = Field(default=16 * 2**20, ge=1)
    """Arrow memory of the rows the DataWriter holds for row groups (per partition and in
    all): a partition's rows are written as a row group once they reach it, so the
    writer's memory does not grow with the row size (16 MiB is ~16k posts or ~40k likes:
    open-hour files get shorter row groups; sealing an hour compacts them into row groups
    of ``seal_row_group_rows``)."""
    seal_schedule: str = "7 * * * *"
    """When the served sealing flow runs: a cron expression (default: hourly, at :07) or a
    number of seconds."""
    seal_grace_seconds: float = Field(default=900.0, ge=0)
    """An hour is sealed once the source's checkpoint and everything buffered are past
    its end by this much (later events still land: a late file, folded in by a re-seal)."""
    seal_memory_mb: int = Field(default=256, ge=64)
    """DuckDB's memory while it compacts an hour (it spills to the lake's _skybuffer/
    beyond it), so sealing an hour of likes needs no hour-sized memory."""
    seal_row_group_rows: int = Field(default=122_880, ge=1024)
    """Rows per row group of a sealed file (DuckDB's default: what DuckDB, Polars and
    Spark read in parallel best)."""


class MetricsSettings(Section):
    """Prometheus endpoints of skybuffer's own processes (0 disables)."""

    host: str = "127.0.0.1"
    """Address the /metrics endpoints listen on."""
    ingest_port: int | None = None
    """The ingester's /metrics port (0 disables); unset: chosen free per data dir (its
    pipeline.json)."""
    writer_port: int | None = None
    """The DataWriter-serving process's /metrics port (0 disables); unset: chosen free per
    data dir (its pipeline.json)."""
