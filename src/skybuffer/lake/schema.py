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

Events are turned into rows by DuckDB's JSON functions, not by Python: the input is one
row per stream entry (its decompressed, newline-joined payload), split and parsed in SQL,
so Python does no per-event work (orjson plus column lists was more than ten times
slower when measured). Lines that are not usable events come back as rejects with a dead-letter
reason instead of failing the batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from skybuffer.constants import TYPES
from skybuffer.events import MAX_TIME_US

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


# --- extraction SQL ------------------------------------------------------------------------
_REF = {"uri": "VARCHAR", "cid": "VARCHAR"}
_RECORDS: dict[str, dict[str, Any]] = {
    "posts": {
        "createdAt": "VARCHAR",
        "text": "VARCHAR",
        "langs": "VARCHAR[]",
        "reply": {"root": _REF, "parent": _REF},
        "embed": {"$type": "VARCHAR", "record": {**_REF, "record": _REF}},
    },
    "likes": {"createdAt": "VARCHAR", "subject": _REF, "via": _REF},
    "reposts": {"createdAt": "VARCHAR", "subject": _REF, "via": _REF},
    "follows": {"createdAt": "VARCHAR", "subject": "VARCHAR"},
    "blocks": {"createdAt": "VARCHAR", "subject": "VARCHAR"},
    "other": {"createdAt": "VARCHAR", "$type": "VARCHAR"},
}
_COMMIT_KEYS = ("rev", "operation", "collection", "rkey", "record", "cid")
_ENVELOPE = {
    "did": "VARCHAR",
    "time_us": "BIGINT",
    "kind": "VARCHAR",
    "commit": {**{k: "VARCHAR" for k in _COMMIT_KEYS}, "record": "JSON"},
    "identity": "JSON",
    "account": "JSON",
}
_PAYLOAD = {
    "handle": "VARCHAR",
    "seq": "BIGINT",
    "time": "VARCHAR",
    "active": "BOOLEAN",
    "status": "VARCHAR",
}


def _lit(value: object) -> str:
    return "'" + json.dumps(value, separators=(",", ":")).replace("'", "''") + "'"


def _patch(keys: list[str], commit: bool) -> str:
    patch: dict[str, Any] = {k: None for k in keys}
    if commit:
        patch["commit"] = {k: None for k in _COMMIT_KEYS}
    return _lit(patch)


def _names(keys: tuple[str, ...]) -> str:
    return ", ".join(f"'{k}'" for k in keys)


# Unknown keys are rare, and finding them costs a second parse of the line (about a third
# of the conversion time): one json_keys call lists the keys of both levels in one parse;
# json_merge_patch (removing the known keys) runs only on hits.
_EXTRA = f"""CASE WHEN reject IS NOT NULL THEN NULL
WHEN e.kind = 'commit' THEN CASE
  WHEN len(list_filter(keys[1], lambda k: k NOT IN ('did', 'time_us', 'kind', 'commit'))) > 0
    OR len(list_filter(keys[2], lambda k: k NOT IN ({_names(_COMMIT_KEYS)}))) > 0
  THEN json_merge_patch(line, {_patch(["did", "time_us", "kind"], commit=True)})::VARCHAR END
WHEN len(list_filter(keys[1], lambda k: k NOT IN ('did', 'time_us', 'kind')
         AND NOT (k = e.kind AND k IN ('identity', 'account')))) > 0
  THEN json_merge_patch(line, CASE e.kind
    WHEN 'identity' THEN {_patch(["did", "time_us", "kind", "identity"], commit=False)}
    WHEN 'account' THEN {_patch(["did", "time_us", "kind", "account"], commit=False)}
    ELSE {_patch(["did", "time_us", "kind"], commit=False)} END)::VARCHAR
END"""

_REJECT = f"""CASE WHEN e IS NULL THEN 'not_json'
  WHEN e.did IS NULL OR NOT starts_with(e.did, 'did:') THEN 'bad_did'
  WHEN e.time_us IS NULL OR e.time_us NOT BETWEEN 1 AND {MAX_TIME_US} THEN 'bad_time_us'
  WHEN e.kind IS NULL THEN 'bad_kind' END"""


def extraction_sql(type_: str) -> str:
    """DuckDB query over ``entries(stream_id, payload)``: the type's columns, in schema
    order, then ``_hour`` (time_us // 1 h), ``_reject`` (reason or NULL) and ``_line``
    (the raw line, only for rejects)."""
    p = (
        f"CASE e.kind WHEN 'identity' THEN from_json(e.identity, {_lit(_PAYLOAD)})"
        f" WHEN 'account' THEN from_json(e.account, {_lit(_PAYLOAD)}) END"
    )
    columns = ",\n  ".join(f"{c.sql} AS {c.name}" for c in COLUMNS[type_])
    return f"""
WITH lines AS (
  SELECT stream_id, unnest(s) AS line, generate_subscripts(s, 1) - 1 AS stream_index
  FROM (SELECT stream_id, string_split(payload, chr(10)) AS s FROM entries)),
parsed AS (
  SELECT stream_id, stream_index, line, try(from_json(line, {_lit(_ENVELOPE)})) AS e,
         try(json_keys(line, ['$', '$.commit'])) AS keys
  FROM lines),
checked AS (SELECT *, {_REJECT} AS reject FROM parsed),
events AS (
  SELECT *, from_json(e.commit.record, {_lit(_RECORDS[type_])}) AS r,
         {p if type_ == "other" else "NULL"} AS p,
         {_EXTRA} AS extra_json
  FROM checked)
SELECT
  {columns},
  e.time_us // {HOUR_US} AS _hour, reject AS _reject,
  CASE WHEN reject IS NOT NULL THEN line END AS _line
FROM events"""


# --- building rows -------------------------------------------------------------------------
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


def entries_table(ids: list[str], payloads: list[bytes]) -> pa.Table:
    """The input of ``RowBuilder.build``: one row per entry, its events newline-joined.

    Built as soon as a chunk is decoded, so the Python bytes can be dropped before DuckDB
    runs; several record batches let DuckDB spread the JSON parsing over its threads.
    """
    table = pa.table(
        {"stream_id": pa.array(ids, STRING), "payload": pa.array(payloads, pa.binary())}
    )
    return pa.Table.from_batches(table.to_batches(max_chunksize=max(1, -(-len(ids) // 8))))


class RowBuilder:
    """Turns decoded entries into Arrow rows with DuckDB (one connection; not thread-safe).

    ``threads``: DuckDB's worker threads (None: one per core). Each keeps its own JSON
    parsing buffers, so threads cost memory; see ``writer.duckdb_threads``.
    """

    def __init__(self, threads: int | None = None) -> None:
        # No extension may be downloaded at run time: json, icu and parquet are built in.
        config: dict[str, str | bool | int | float | list[str]] = {
            "autoinstall_known_extensions": False
        }
        if threads is not None:
            config["threads"] = threads
        self._con = duckdb.connect(config=config)
        self._con.execute("SET TimeZone = 'UTC'")
        self._sql = {t: extraction_sql(t) for t in TYPES}

    def build(self, type_: str, entries: pa.Table) -> Rows:
        """Rows of ``entries`` (from ``entries_table``).

        Raises duckdb.Error or pyarrow.ArrowInvalid if the input cannot be converted at
        all (e.g. invalid UTF-8); callers isolate the entry at fault.
        """
        entries = entries.set_column(1, "payload", entries["payload"].cast(STRING))
        self._con.register("entries", entries)
        try:
            result = self._con.sql(self._sql[type_]).to_arrow_table()
        finally:
            self._con.unregister("entries")
        return self._split(type_, result)

    @staticmethod
    def _split(type_: str, result: pa.Table) -> Rows:
        rejects: list[Reject] = []
        reject = result["_reject"]
        if reject.null_count < result.num_rows:
            bad = result.filter(pc.is_valid(reject))
            rejects = [
                Reject(r["stream_id"], r["stream_index"], r["_reject"], r["_line"].encode())
                for r in bad.select(["stream_id", "stream_index", "_reject", "_line"]).to_pylist()
            ]
            result = result.filter(pc.is_null(reject))
        target = schema(type_)
        table = result.select(target.names).cast(target)
        return Rows(table, result["_hour"].combine_chunks(), rejects)

    def close(self) -> None:
        self._con.close()


# --- rebuilding events -----------------------------------------------------------------------
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
