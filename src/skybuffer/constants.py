"""Every Redis key, stream, group and field name skybuffer uses, in one place.

All keys live under one prefix (a setting, default ``skybuffer:``). No transaction or
script touches keys of two prefixes, so a Redis Cluster deployment can give each
partition a hash-tagged prefix (``skybuffer:{p0}:``) without a redesign.
"""

from __future__ import annotations

from dataclasses import dataclass

# The event types, in the order the lake and the status table show them.
TYPES: tuple[str, ...] = ("posts", "likes", "reposts", "follows", "blocks", "other")

# Collection NSID -> type. Every other collection, and identity/account events, is "other".
COLLECTION_TYPES: dict[str, str] = {
    "app.bsky.feed.post": "posts",
    "app.bsky.feed.like": "likes",
    "app.bsky.feed.repost": "reposts",
    "app.bsky.graph.follow": "follows",
    "app.bsky.graph.block": "blocks",
}

DEFAULT_PREFIX = "skybuffer:"

CODEC_LEVEL = 2
"""The zstd level of buffered entries, the one default (IngestSettings.codec_level, the
Encoder and `skybuffer bench codec` take it from here): about the bytes of level 3 in
two thirds of its time (docs/BENCHMARKS.md, "codec")."""

# Stream entry fields. Every entry carries exactly these names, in this order, so that
# Redis stores them once per listpack node (the SAMEFIELDS flag) and they cost nothing.
FIELD_VERSION = b"v"  # codec version
FIELD_COUNT = b"n"  # number of events in the entry
FIELD_DATA = b"d"  # the encoded events

# Fields of the DataWriter's figures hash (Keys.writer_stats; observability/writer_stats.py
# adds and reads them): "{what}:{type}" per type, "runs:{outcome}" per run outcome,
# "le:{bound}" per histogram bucket, and the last run's figures.
WS_RUNS = "runs"
WS_BUCKET = "le"
WS_RUNS_COUNT = "runs:count"
WS_RUNS_SUM = "runs:sum"
WS_LAST_RUN = "last_run"
WS_LAST_SUCCESS = "last_success"
WS_LAST_DURATION = "last_duration"


def ws_field(what: str, label: object) -> str:
    """A labelled field of the figures hash: ``rows:posts``, ``runs:success``, ``le:5.0``."""
    return f"{what}:{label}"


# Dead-letter entry fields.
DL_REASON = b"reason"
DL_SOURCE = b"source"
DL_RAW = b"raw"
DL_DETAIL = b"detail"
DL_CODEC = b"codec"  # empty: raw is one event; else the codec version of a bundle of events
DL_EVENTS = b"events"  # events in the letter (1 unless a bundle)

# Cursor hash fields: the source position, the batch sequence number, and the events
# (dead letters included) ever confirmed from this source.
CURSOR_POSITION = b"position"
CURSOR_SEQ = b"seq"
CURSOR_EVENTS = b"events"

# Consumer group of the DataWriter on every stream.
WRITER_GROUP = "datawriter"


@dataclass(frozen=True)
class Keys:
    """The Redis key names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def stream(self, type_: str) -> str:
        return f"{self.prefix}stream:{type_}"

    def streams(self) -> dict[str, str]:
        return {t: self.stream(t) for t in TYPES}

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def deadletter_counts(self) -> str:
        """Hash reason -> dead-lettered events (kept by every script that adds or removes one)."""
        return f"{self.prefix}deadletter:events"

    def cursor(self, source: str) -> str:
        return f"{self.prefix}cursor:{source}"

    @property
    def event_counts(self) -> str:
        """Hash type -> buffered events (entries hold micro-batches, so XLEN counts batches)."""
        return f"{self.prefix}events"

    @property
    def writer_stats(self) -> str:
        """Hash of the DataWriter's cumulative figures (observability/writer_stats.py)."""
        return f"{self.prefix}writer:stats"

    @property
    def writer_lease(self) -> str:
        """The DataWriter's lease (buffer/lease.py): one writer of this prefix at a time."""
        return f"{self.prefix}lease:datawriter"

    def ingest_lease(self, source: str) -> str:
        """The lease of the ingester of one source cursor."""
        return f"{self.prefix}lease:ingest:{source}"

    @property
    def writer_committed(self) -> str:
        """Hash type -> last stream ID the DataWriter committed (compared with the lake's
        record of the same, to notice a Redis that forgot commits)."""
        return f"{self.prefix}writer:committed"

    @property
    def ops_prefix(self) -> str:
        """Scratch keys of the operations toolkit; never pipeline data."""
        return f"{self.prefix}ops:"
