"""DuckDB over the lake: one view per type, query results, and the lake's figures.

The current-state views (``posts_current``, ...) are built on the type views by
lake/views.py.

Each view reads its type's files with ``hive_partitioning`` (year, month, day, hour become
INTEGER columns: declared, since DuckDB keeps zero-padded values such as ``07`` as text)
and ``union_by_name`` (files written by an older schema version get
NULLs for newer columns). A type without files yet is an empty view with the type's
schema, so queries never fail for lack of data. Only published files are read: the glob
ends in ``*.parquet``, which a writer's in-progress temp file never matches.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar

import duckdb

from skybuffer.constants import TYPES
from skybuffer.errors import QueryError
from skybuffer.lake.layout import Layout, root_path
from skybuffer.lake.manifest import MANIFEST, SEALED_PREFIX, read_manifest
from skybuffer.lake.schema import schema
from skybuffer.lake.views import create_current_views
from skybuffer.settings import LakeSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_SKIPPED_FILES = 100
HIVE_TYPES = "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"


EMPTY_SQL = 'no SQL given: pass a statement, e.g. skybuffer query "select count(*) from likes"'


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


def connect(lake: LakeSettings, skipped: frozenset[str] = frozenset()) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per type (posts, likes, ...) over the lake, leaving
    out the ``skipped`` files (found unreadable), and the current-state views over them
    (``posts_current``, ..., ``accounts_current``: lake/views.py)."""
    layout = _layout(lake)
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    for type_ in TYPES:
        files = _files(con, layout.glob(type_), skipped | replaced_files(layout.glob(type_)))
        if files:
            con.execute(
                f"CREATE VIEW {type_} AS SELECT * FROM read_parquet({files}, "
                f"hive_partitioning = true, union_by_name = true, hive_types = {HIVE_TYPES})"
            )
        else:
            con.register(f"_empty_{type_}", schema(type_).empty_table())
            con.execute(f"CREATE VIEW {type_} AS SELECT * FROM _empty_{type_}")
    create_current_views(con)
    return con


def replaced_files(data_glob: str) -> frozenset[str]:
    """Files an unfinished seal left beside their replacement (lake/sealing.py): those
    its manifest says it replaced, and a sealed file no manifest lists yet (a seal killed
    between its rename and its manifest). Never read, so a query never counts an event
    twice whenever it runs."""
    stale = set()
    hours = data_glob.removesuffix("*.parquet")
    for manifest_path in glob.glob(hours + MANIFEST):
        directory = os.path.dirname(manifest_path)
        manifest = read_manifest(directory)
        for name in manifest.replaced if manifest else []:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                stale.add(path)
    for sealed in glob.glob(hours + SEALED_PREFIX + "*.parquet"):
        manifest = read_manifest(os.path.dirname(sealed))
        if manifest is None or os.path.basename(sealed) not in manifest.names:
            stale.add(sealed)
    return frozenset(stale)


def _files(con: duckdb.DuckDBPyConnection, glob: str, skipped: frozenset[str]) -> str:
    """The read_parquet argument for a glob: the glob itself, or the list of its files less
    the skipped ones ('' when there is none)."""
    if not skipped:
        found = con.sql("SELECT count(*) FROM glob(?)", params=[glob]).fetchall()[0][0]
        return _quote(glob) if found else ""
    names = [r[0] for r in con.sql("SELECT file FROM glob(?)", params=[glob]).fetchall()]
    kept = [n for n in names if n not in skipped]
    return "[" + ", ".join(_quote(n) for n in kept) + "]" if kept else ""


def run_query(lake: LakeSettings, sql: str) -> QueryResult:
    """Run ``sql`` against the views; a DuckDB error becomes a QueryError, and so does SQL
    that is only blanks or comments (DuckDB would run it silently and return nothing)."""
    if not _statement(sql):
        raise QueryError(EMPTY_SQL)

    def attempt(skipped: frozenset[str]) -> QueryResult:
        con = connect(lake, skipped)
        try:
            relation = con.sql(sql)
            if relation is None:
                return QueryResult([], [])
            return QueryResult(list(relation.columns), relation.fetchall())
        finally:
            con.close()

    try:
        return skipping_unreadable(_layout(lake).root, attempt)
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from None


def _statement(sql: str) -> str:
    """``sql`` without ``--`` and ``/* */`` comments, semicolons and blanks (quotes are
    not parsed: this only tells an empty statement from one DuckDB must judge)."""
    text = re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL)
    text = re.sub(r"--[^\n]*", " ", text)
    return text.replace(";", " ").strip()


def skipping_unreadable(root: str, attempt: Callable[[frozenset[str]], T]) -> T:
    """Run ``attempt`` again without each lake file DuckDB names as unreadable (a torn or
    foreign file): readers never fail on one bad file; each is named in a warning."""
    skipped: set[str] = set()
    while True:
        try:
            return attempt(frozenset(skipped))
        except duckdb.Error as exc:
            bad = _named_file(str(exc), root)
            if bad is None or bad in skipped or len(skipped) >= MAX_SKIPPED_FILES:
                raise
            skipped.add(bad)
            log.warning(
                "Skipping %s: not a readable Parquet file (%s). Move it out of the lake; the "
                "DataWriter quarantines such files in %s/_quarantine when it meets them.",
                bad,
                str(exc).splitlines()[0][:200],
                root,
            )


def _named_file(message: str, root: str) -> str | None:
    match = re.search(r"(?:'|\")(" + re.escape(root) + r"/[^'\"]+\.parquet)(?:'|\")", message)
    return match.group(1) if match else None


def lake_figures(lake: LakeSettings) -> dict[str, TypeFigures]:
    """Files, rows and bytes per type from the Parquet footers, and the newest partition."""
    layout = _layout(lake)

    def attempt(skipped: frozenset[str]) -> dict[str, TypeFigures]:
        con = duckdb.connect(config={"autoinstall_known_extensions": False})
        try:
            return {t: _type_figures(con, layout, t, skipped) for t in TYPES}
        finally:
            con.close()

    return skipping_unreadable(layout.root, attempt)


def _type_figures(
    con: duckdb.DuckDBPyConnection, layout: Layout, type_: str, skipped: frozenset[str]
) -> TypeFigures:
    files_arg = _files(con, layout.glob(type_), skipped)
    if not files_arg:
        return TypeFigures()
    files = con.sql(
        f"SELECT file_name, num_rows, file_size_bytes FROM parquet_file_metadata({files_arg})"
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
