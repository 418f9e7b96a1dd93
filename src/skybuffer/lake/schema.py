"""The lake's row format: one explicit Arrow schema per type, and how events become rows.

Each type's columns are declared once, in ``COLUMNS``: name, Arrow type, the DuckDB
expression that extracts it from a Jetstream event, and whether values repeat enough for
dictionary encoding. The schema, the extraction SQL and the Parquet options all derive
from that table, so they cannot disagree.

Losslessness: typed columns are copies for querying; the source of truth is
``record_json`` (the commit's record), ``payload_json`` (the identity/account object) and
``extra_json`` (every envelope key Jetstream may add that has no column, e.g. ``cursor``;
NULL when there is none). ``rebuild_event(row)`` returns the original event as a JSON
value (the same dict ``orjson.loads`` gives for the raw line). Envelope values are taken
to have Jetstream's types (strings; ``time_us`` an integer), as the ingester validates.

Events are turned into rows by lake/rows.py (msgspec, the DataWriter's path), which hands
every line it cannot prove it converts identically to lake/extraction.py (DuckDB SQL built
from ``Column.sql``, the reference). Lines that are not usable events come back as
rejects with a dead-letter reason instead of failing the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from skybuffer.constants import TYPES

SCHEMA_VERSION = "1"
HOUR_US = 3_600_000_000
STRING, INT64, UTC_US = pa.string(), pa.int64(), pa.timestamp("us", tz="UTC")
STRINGS = pa.list_(pa.string())


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    sql: str
    dictionary: bool = False
    """Dictionary-encode: only where values repeat (unique values only cost time and bytes)."""
    statistics: bool = False
    """Write min/max statistics (the columns people filter on)."""


def _ref(prefix: str, path: str) -> list[Column]:
    return [
        Column(f"{prefix}_uri", STRING, f"r.{path}.uri", dictionary=True, statistics=True),
        Column(f"{prefix}_cid", STRING, f"r.{path}.cid", dictionary=True),
    ]


_HEAD = [
    Column("stream_id", STRING, "stream_id", dictionary=True, statistics=True),
    Column("stream_index", pa.int32(), "stream_index::INTEGER"),
    Column("did", STRING, "e.did", dictionary=True, statistics=True),
    Column("time_us", INT64, "e.time_us", statistics=True),
    Column("event_time", UTC_US, "make_timestamptz(e.time_us)", statistics=True),
    Column("kind", STRING, "e.kind", dictionary=True, statistics=True),
    Column("operation", STRING, "e.commit.operation", dictionary=True, statistics=True),
    Column("collection", STRING, "e.commit.collection", dictionary=True, statistics=True),
    Column("rkey", STRING, "e.commit.rkey"),
    Column("rev", STRING, "e.commit.rev"),
    Column("cid", STRING, "e.commit.cid"),
    Column("created_at", STRING, "r.createdAt"),
    Column("created_at_ts", UTC_US, "TRY_CAST(r.createdAt AS TIMESTAMPTZ)", statistics=True),
]
_TAIL = [
    Column("record_json", STRING, "e.commit.record::VARCHAR"),
    Column("extra_json", STRING, "extra_json"),
]
_TYPED: dict[str, list[Column]] = {
    "posts": [
        Column("text", STRING, "r.text"),
        Column("langs", STRINGS, "r.langs", dictionary=True),
        *_ref("reply_root", "reply.root"),
        *_ref("reply_parent", "reply.parent"),
        Column("embed_type", STRING, 'r.embed."$type"', dictionary=True, statistics=True),
        Column(
            "embed_record_uri",
            STRING,
            "coalesce(r.embed.record.record.uri, r.embed.record.uri)",
            dictionary=True,
        ),
    ],
    "likes": [*_ref("subject", "subject"), *_ref("via", "via")],
    "reposts": [*_ref("subject", "subject"), *_ref("via", "via")],
    "follows": [Column("subject_did", STRING, "r.subject", dictionary=True, statistics=True)],
    "blocks": [Column("subject_did", STRING, "r.subject", dictionary=True, statistics=True)],
    "other": [
        Column("record_type", STRING, 'r."$type"', dictionary=True, statistics=True),
        Column("handle", STRING, "p.handle"),
        Column("active", pa.bool_(), "p.active"),
        Column("status", STRING, "p.status", dictionary=True),
        Column("relay_seq", INT64, "p.seq"),
        Column("relay_time", STRING, "p.time"),
        Column(
            "payload_json",
            STRING,
            "CASE e.kind WHEN 'identity' THEN e.identity WHEN 'account' THEN e.account END",
        ),
    ],
}
COLUMNS: dict[str, list[Column]] = {t: [*_HEAD, *_TYPED[t], *_TAIL] for t in TYPES}


def schema(type_: str) -> pa.Schema:
    """The Arrow schema of a type's lake files (with the schema version as metadata)."""
    fields = [pa.field(c.name, c.type) for c in COLUMNS[type_]]
    return pa.schema(fields, metadata={"skybuffer.schema_version": SCHEMA_VERSION})


def dictionary_columns(type_: str) -> list[str]:
    return [c.name for c in COLUMNS[type_] if c.dictionary]


def statistics_columns(type_: str) -> list[str]:
    return [c.name for c in COLUMNS[type_] if c.statistics]


@dataclass(frozen=True)
class Reject:
    """A line inside a decodable entry that is not a usable event."""

    stream_id: str
    stream_index: int
    reason: str
    line: bytes


@dataclass
class Rows:
    """A type's rows in schema order, the hour bucket of each, and the rejected lines."""

    table: pa.Table
    hours: pa.Array
    rejects: list[Reject]


def rebuild_event(row: dict[str, Any]) -> dict[str, Any]:
    """The original event (as parsed JSON) from one lake row of any type."""
    event: dict[str, Any] = {"did": row["did"], "time_us": row["time_us"], "kind": row["kind"]}
    if row["kind"] == "commit":
        envelope = ("rev", "operation", "collection", "rkey")
        commit = {k: row[k] for k in envelope if row[k] is not None}
        if row.get("record_json") is not None:
            commit["record"] = orjson.loads(row["record_json"])
        if row.get("cid") is not None:
            commit["cid"] = row["cid"]
        event["commit"] = commit
    elif row.get("payload_json") is not None:
        event[row["kind"]] = orjson.loads(row["payload_json"])
    if row.get("extra_json"):
        _merge(event, orjson.loads(row["extra_json"]))
    return event


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif not (isinstance(value, dict) and not value and key not in target):
            target[key] = value
