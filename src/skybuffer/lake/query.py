"""DuckDB over the lake: one view per type, query results, and the lake's figures.

Each view reads its type's files with ``hive_partitioning`` (year, month, day, hour become
INTEGER columns: declared, since DuckDB keeps zero-padded values such as ``07`` as text)
and ``union_by_name`` (files written by an older schema version get
NULLs for newer columns). A type without files yet is an empty view with the type's
schema, so queries never fail for lack of data. Only published files are read: the glob
ends in ``*.parquet``, which a writer's in-progress temp file never matches.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import duckdb

from skybuffer.constants import TYPES
from skybuffer.errors import SkybufferError
from skybuffer.lake.schema import schema
from skybuffer.lake.writer import Layout, root_path
from skybuffer.settings import LakeSettings

HIVE_TYPES = "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"


class QueryError(SkybufferError):
    """The SQL given to `skybuffer query` failed; the message is DuckDB's."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass
class TypeFigures:
    """A type's part of the lake: files, rows, bytes, newest hour partition."""

    files: int = 0
    rows: int = 0
    bytes: int = 0
    newest_partition: str | None = None
    newest_hour: str | None = None
    """The newest partition's hour, ``YYYY-MM-DDTHH`` (UTC)."""


def _layout(lake: LakeSettings) -> Layout:
    assert lake.root is not None, "settings fill lake.root"
    return Layout(root_path(lake.root), lake.path_template)


def connect(lake: LakeSettings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per type (posts, likes, ...) over the lake."""
    layout = _layout(lake)
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    for type_ in TYPES:
        glob = layout.glob(type_)
        if con.sql("SELECT count(*) FROM glob(?)", params=[glob]).fetchall()[0][0]:
            con.execute(
                f"CREATE VIEW {type_} AS SELECT * FROM read_parquet({_quote(glob)}, "
                f"hive_partitioning = true, union_by_name = true, hive_types = {HIVE_TYPES})"
            )
        else:
            con.register(f"_empty_{type_}", schema(type_).empty_table())
            con.execute(f"CREATE VIEW {type_} AS SELECT * FROM _empty_{type_}")
    return con


def run_query(lake: LakeSettings, sql: str) -> QueryResult:
    """Run ``sql`` against the views; a DuckDB error becomes a QueryError."""
    con = connect(lake)
    try:
        relation = con.sql(sql)
        if relation is None:
            return QueryResult([], [])
        return QueryResult(list(relation.columns), relation.fetchall())
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from None
    finally:
        con.close()


def lake_figures(lake: LakeSettings) -> dict[str, TypeFigures]:
    """Files, rows and bytes per type from the Parquet footers, and the newest partition."""
    layout = _layout(lake)
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    figures: dict[str, TypeFigures] = {}
    try:
        for type_ in TYPES:
            figures[type_] = _type_figures(con, layout, type_)
    finally:
        con.close()
    return figures


def _type_figures(con: duckdb.DuckDBPyConnection, layout: Layout, type_: str) -> TypeFigures:
    glob = layout.glob(type_)
    if not con.sql("SELECT count(*) FROM glob(?)", params=[glob]).fetchall()[0][0]:
        return TypeFigures()
    files = con.sql(
        "SELECT file_name, num_rows, file_size_bytes FROM parquet_file_metadata(?)",
        params=[glob],
    ).fetchall()
    matcher = layout.matcher(type_)
    newest: tuple[tuple[int, ...], str] | None = None
    for name, _, _ in files:
        relative = str(name)[len(layout.root) + 1 :]
        match = matcher.match(relative)
        if match is None:
            continue
        key = tuple(int(match[f]) for f in ("year", "month", "day", "hour"))
        if newest is None or key > newest[0]:
            newest = (key, relative.rsplit("/", 1)[0])
    return TypeFigures(
        files=len(files),
        rows=sum(int(r) for _, r, _ in files),
        bytes=sum(int(b) for _, _, b in files),
        newest_partition=newest[1] if newest else None,
        newest_hour="{:04d}-{:02d}-{:02d}T{:02d}".format(*newest[0]) if newest else None,
    )


# --- output formats ----------------------------------------------------------------------
def to_json(result: QueryResult) -> str:
    """A JSON array of row objects (timestamps as ISO 8601)."""
    return json.dumps(result.records(), default=_jsonable, ensure_ascii=False, indent=2)


def to_csv(result: QueryResult) -> str:
    """CSV with a header row; lists and structs as JSON, timestamps as ISO 8601."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=_jsonable, ensure_ascii=False)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
