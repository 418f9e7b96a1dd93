"""Events -> lake rows in one pass of msgspec: the DataWriter's conversion, without DuckDB.

Why not DuckDB (lake/extraction.py, kept as the reference and the fallback): its JSON
parsing working set, and the library itself (~46 MB of code pages and its own heap), were
most of the DataWriter's peak memory. Here each line is decoded by msgspec into typed
structs (the envelope and the commit strictly: no unknown key; the record leniently,
only the keys that have columns), the record itself kept as raw JSON bytes.

What guarantees the same rows as DuckDB: this path takes a line only when it can prove
the result equal, and hands every other line to DuckDB (``SqlRowBuilder``, loaded on first
use), whose rows are merged back in their place. A line goes to DuckDB when it is not a
well-formed event with Jetstream's types (the rejects and their reasons are DuckDB's),
has envelope or commit keys without a column (``extra_json``), holds a value of another
JSON type than its column's, a record or payload that is not in DuckDB's normal form
(minified, no ``\\u`` escape, no number with a fraction or an exponent: what
``record_json`` would re-serialise), or a ``createdAt`` outside the forms parsed here
(lake/created_at.py asks DuckDB for those values alone). Real Jetstream events take this
path entirely (tests/lake/test_rows.py compares both on real and synthetic events and on
every odd case above). The one difference: a key repeated inside an event, where DuckDB's
typed column takes the first value and this path the last (``record_json`` is the same);
Jetstream does not send one, and atproto records cannot hold one (DAG-CBOR maps).

Cost, measured (docs/BENCHMARKS.md): about DuckDB's CPU per event for likes, more for
posts, on one thread where DuckDB used every core; the DataWriter's peak RSS falls by
~200 MB.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from skybuffer.constants import TYPES
from skybuffer.events import MAX_TIME_US
from skybuffer.lake.created_at import created_at_column
from skybuffer.lake.normal_form import NotHere, plain, utf8, value_text, whole
from skybuffer.lake.schema import COLUMNS, HOUR_US, INT64, STRING, UTC_US, Reject, Rows, schema
from skybuffer.lake.shapes import EVENT, INT64_MAX, PAYLOAD, RECORDS, Event


def conversion_errors() -> tuple[type[BaseException], ...]:
    """What a conversion raises when its input cannot be converted at all: Arrow's errors,
    and DuckDB's once the fallback has loaded it (nothing else can raise them)."""
    duckdb = sys.modules.get("duckdb")
    return (pa.ArrowException, duckdb.Error) if duckdb is not None else (pa.ArrowException,)


class RowBuilder:
    """Turns decoded entries into Arrow rows (one per writer; not thread-safe).

    ``threads``: the DuckDB fallback's worker threads (None: one per core), see
    ``writer.duckdb_threads``; the fallback connects only when a line needs it.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._sql: Any = None
        self.fallback_lines = 0
        """Lines converted by DuckDB so far (a figure for tests and benchmarks)."""

    @property
    def sql(self) -> Any:
        """The DuckDB row builder, created on first use (it loads DuckDB)."""
        if self._sql is None:
            from skybuffer.lake.extraction import SqlRowBuilder

            self._sql = SqlRowBuilder(self.threads)
        return self._sql

    def build(self, type_: str, ids: list[str], payloads: list[bytes]) -> Rows:
        """Rows of the entries ``ids`` (their newline-joined events ``payloads``), equal
        to DuckDB's (module docstring).

        Raises pyarrow.ArrowInvalid (or duckdb.Error) if the input cannot be converted
        at all (e.g. invalid UTF-8); callers isolate the entry at fault.
        """
        chunk = _Chunk(type_, ids)
        with _no_cycle_collection():
            for entry_id, payload, ok in zip(ids, payloads, plain(payloads), strict=True):
                chunk.add(entry_id, payload, ok)
            return self._merge(type_, chunk)

    def _merge(self, type_: str, chunk: _Chunk) -> Rows:
        """This path's rows, and DuckDB's for the lines left, in line order."""
        table = created_at_column(_table(type_, chunk), self._created_at)
        left = chunk.left
        rejects: list[Reject] = []
        if left:
            self.fallback_lines += len(left)
            lines = [line for _, _, _, line in left]
            extra = self.sql.build_lines(type_, [i for _, i, _, _ in left], lines)
            table = pa.concat_tables([table, _placed(extra.table, extra.hours, left)])
            table = table.take(pc.sort_indices(table["_position"]))
            rejects = [_placed_reject(r, left) for r in extra.rejects]
        hours = table["_hour"].combine_chunks()
        return Rows(table.drop_columns(["_hour", "_position"]), hours, rejects)

    def _created_at(self, values: list[str]) -> list[int | None]:
        """DuckDB's TRY_CAST of createdAt values outside the forms parsed here."""
        return self.sql.timestamps(values)

    def close(self) -> None:
        if self._sql is not None:
            self._sql.close()


class _Chunk:
    """The rows of one chunk's lines, and the lines left to DuckDB (with their place)."""

    def __init__(self, type_: str, ids: list[str]) -> None:
        self.type = type_
        self.ids = ids
        record, self.columns = RECORDS[type_]
        self.record: msgspec.json.Decoder[Any] = msgspec.json.Decoder(record)
        self.rows: list[tuple[Any, ...]] = []
        self.left: list[tuple[int, str, int, bytes]] = []
        self.position = 0
        self.line_entries: list[int] = []
        """Per line of the chunk (by position): the number of its entry."""
        self.line_indexes: list[int] = []
        """Per line: its index in its entry (``stream_index``)."""
        self.entries = 0

    def add(self, entry_id: str, payload: bytes, is_plain: bool) -> None:
        """An entry's lines: decoded in one call when the entry is in normal form as a
        whole (the common case), else line by line."""
        start = self.position
        events = whole(payload) if is_plain else None
        if events is None:
            self._add_lines(entry_id, payload.split(b"\n"), payload.isascii() or utf8(payload))
        else:
            left = self._add_events(events)
            if left:
                lines = payload.split(b"\n")
                self.left += [
                    (position, entry_id, position - start, lines[position - start])
                    for position in left
                ]
        lines_added = self.position - start
        self.line_entries += [self.entries] * lines_added
        self.line_indexes += range(lines_added)
        self.entries += 1

    def _add_events(self, events: list[Event]) -> list[int]:
        """The hot loop: rows of an entry's events; returns the positions of the events
        ``_row`` could not convert either."""
        rows, decode, columns, position = self.rows, self.record.decode, self.columns, self.position
        left: list[int] = []
        for e in events:
            c = e.commit
            try:
                if c is None or not c.record or e.kind != "commit" or e.identity or e.account:
                    self.position = position
                    rows.append(self._row(e, normal=True))
                elif e.did.startswith("did:") and 0 < e.time_us <= MAX_TIME_US:
                    r = decode(c.record)
                    rows.append(
                        (
                            position,
                            e.did,
                            e.time_us,
                            e.kind,
                            c.operation,
                            c.collection,
                            c.rkey,
                            c.rev,
                            c.cid,
                            r.createdAt,
                            *columns(r),
                            bytes(c.record),
                        )
                    )
                else:
                    raise NotHere
            except (NotHere, msgspec.DecodeError):
                left.append(position)
            position += 1
        self.position = position
        return left

    def _add_lines(self, entry_id: str, lines: list[bytes], utf8: bool) -> None:
        for index, line in enumerate(lines):
            try:
                if not utf8:
                    raise NotHere
                self.rows.append(self._row(EVENT.decode(line), normal=False))
            except (NotHere, msgspec.DecodeError, UnicodeDecodeError):
                self.left.append((self.position, entry_id, index, line))
            self.position += 1

    def _row(self, e: Event, normal: bool) -> tuple[Any, ...]:
        """One event's position and values (``_VALUES``, typed, record JSON); NotHere when
        DuckDB must convert it."""
        if not e.did.startswith("did:") or not 0 < e.time_us <= MAX_TIME_US:
            raise NotHere
        c = e.commit
        if e.kind == "commit" and c is not None and not (e.identity or e.account):
            head: tuple[Any, ...] = (e.did, e.time_us, e.kind, c.operation, c.collection)
            head += (c.rkey, c.rev, c.cid)
            if not c.record:
                return (self.position, *head, None, *_NULLS[self.type], None)
            raw = bytes(c.record)
            record_json = value_text(raw, normal)
            r = self.record.decode(raw)
            return (self.position, *head, r.createdAt, *self.columns(r), record_json)
        if self.type == "other" and c is None:
            typed = _payload(e, normal)
            head = (e.did, e.time_us, e.kind, None, None, None, None, None)
            return (self.position, *head, None, *typed, None)
        raise NotHere


def _payload(e: Event, normal: bool) -> tuple[Any, ...]:
    """The typed columns of an identity or account event."""
    if e.kind == "identity" and e.identity and not e.account:
        raw = bytes(e.identity)
    elif e.kind == "account" and e.account and not e.identity:
        raw = bytes(e.account)
    else:
        raise NotHere
    payload_json = value_text(raw, normal)
    p = PAYLOAD.decode(raw)
    if p.seq is not None and not -INT64_MAX - 1 <= p.seq <= INT64_MAX:
        raise NotHere
    return (None, p.handle, p.active, p.status, p.seq, p.time, payload_json)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while a chunk's rows are made: they are ~10^5
    tuples that hold no cycles, and collections triggered by so many new objects cost
    a third of the conversion (measured); reference counting frees everything as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_TYPED = {t: [c.name for c in COLUMNS[t][13:-2]] for t in TYPES}
_NULLS = {t: (None,) * len(names) for t, names in _TYPED.items()}
_VALUES = ["did", "time_us", "kind", "operation", "collection", "rkey", "rev", "cid"]
_VALUES += ["created_at"]
_JSON = {"record_json", "payload_json"}
"""Kept as the bytes they were sent as (the hot path never makes them Python strings)."""


def _table(type_: str, chunk: _Chunk) -> pa.Table:
    """The chunk's rows as a table of the type's schema (created_at_ts still unset), then
    each row's hour (``_hour``) and line position in the chunk (``_position``)."""
    target, rows = schema(type_), chunk.rows
    names = ["_position", *_VALUES, *_TYPED[type_], "record_json"]
    values = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    types = [INT64, *(target.field(n).type for n in names[1:])]
    types = [pa.binary() if n in _JSON else t for n, t in zip(names, types, strict=True)]
    arrays = {n: pa.array(v, t) for n, v, t in zip(names, values, types, strict=True)}
    for name in _JSON.intersection(arrays):  # not UTF-8: ArrowInvalid, as DuckDB fails
        arrays[name] = arrays[name].cast(STRING)
    position = arrays["_position"]
    entry = pc.take(pa.array(chunk.line_entries, pa.int32()), position)
    arrays["stream_id"] = pc.take(pa.array(chunk.ids, STRING), entry)
    arrays["stream_index"] = pc.take(pa.array(chunk.line_indexes, pa.int32()), position)
    arrays["extra_json"] = pa.nulls(len(rows), STRING)
    arrays["event_time"] = arrays["time_us"].cast(UTC_US)
    arrays["created_at_ts"] = pa.nulls(len(rows), UTC_US)
    arrays["_hour"] = pc.divide(arrays["time_us"], HOUR_US)
    columns = [arrays[n] for n in _with_place(target).names]
    return pa.Table.from_arrays(columns, schema=_with_place(target))


def _with_place(target: pa.Schema) -> pa.Schema:
    return target.append(pa.field("_hour", INT64)).append(pa.field("_position", INT64))


def _placed(table: pa.Table, hours: pa.Array, left: list[tuple[int, str, int, bytes]]) -> pa.Table:
    """DuckDB's rows of the lines left (line k has stream_id ``str(k)``) with their own
    entry ID, index and position."""
    picks = [left[int(k)] for k in table["stream_id"].to_pylist()]
    ids = pa.array([entry_id for _, entry_id, _, _ in picks], STRING)
    indexes = pa.array([index for _, _, index, _ in picks], pa.int32())
    positions = pa.array([position for position, _, _, _ in picks], INT64)
    table = table.set_column(0, table.schema.field(0), ids)
    table = table.set_column(1, table.schema.field(1), indexes)
    table = table.append_column("_hour", hours).append_column("_position", positions)
    return table


def _placed_reject(reject: Reject, left: list[tuple[int, str, int, bytes]]) -> Reject:
    _, entry_id, index, line = left[int(reject.stream_id)]
    return Reject(entry_id, index, reject.reason, line)
