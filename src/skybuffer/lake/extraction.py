"""Events -> lake rows in DuckDB SQL: the reference conversion, and the fallback of
lake/rows.py for every line that path cannot prove it converts identically.

The input is one row per stream entry (its decompressed, newline-joined payload), split
and parsed by DuckDB's JSON functions; each column's expression is ``Column.sql`` in
lake/schema.py. Lines that are not usable events come back as rejects with a dead-letter
reason (``_reject``) instead of failing the batch. DuckDB is imported only when a
``SqlRowBuilder`` is made: the DataWriter's normal path never loads it.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from skybuffer.constants import TYPES
from skybuffer.events import MAX_TIME_US
from skybuffer.lake.schema import COLUMNS, HOUR_US, STRING, Reject, Rows, schema

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


def entries_table(ids: list[str], payloads: list[bytes]) -> pa.Table:
    """DuckDB's input: one row per entry, its events newline-joined.

    Built as soon as a chunk is decoded, so the Python bytes can be dropped before DuckDB
    runs; several record batches let DuckDB spread the JSON parsing over its threads.
    """
    table = pa.table(
        {"stream_id": pa.array(ids, STRING), "payload": pa.array(payloads, pa.binary())}
    )
    return pa.Table.from_batches(table.to_batches(max_chunksize=max(1, -(-len(ids) // 8))))


class SqlRowBuilder:
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
        self.fallback_lines = 0
        """Always 0: every line is DuckDB's here (the figure ``bench write`` reports)."""
        import duckdb  # loaded only when a line needs this path

        self._con = duckdb.connect(config=config)
        self._con.execute("SET TimeZone = 'UTC'")
        self._sql = {t: extraction_sql(t) for t in TYPES}

    def build(self, type_: str, ids: list[str], payloads: list[bytes]) -> Rows:
        """Rows of the entries ``ids`` (their newline-joined events ``payloads``).

        Raises duckdb.Error or pyarrow.ArrowInvalid if the input cannot be converted at
        all (e.g. invalid UTF-8); callers isolate the entry at fault.
        """
        entries = entries_table(ids, payloads)
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

    def build_lines(self, type_: str, ids: list[str], lines: list[bytes]) -> Rows:
        """Rows of single lines: line k becomes an entry of its own whose ``stream_id`` is
        ``str(k)`` (the caller maps them back to their entries and positions)."""
        del ids  # the positions, not the IDs, identify the lines here
        keys = [str(k) for k in range(len(lines))]
        return self.build(type_, keys, lines)

    def timestamps(self, values: list[str]) -> list[int | None]:
        """``TRY_CAST(value AS TIMESTAMPTZ)`` in microseconds since the epoch (UTC)."""
        table = pa.table({"v": pa.array(values, STRING)})
        self._con.register("created", table)
        try:
            sql = "SELECT epoch_us(TRY_CAST(v AS TIMESTAMPTZ)) AS us FROM created"
            result = self._con.sql(sql).to_arrow_table()
        finally:
            self._con.unregister("created")
        return list(result["us"].to_pylist())

    def close(self) -> None:
        self._con.close()
