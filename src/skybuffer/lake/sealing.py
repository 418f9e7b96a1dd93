"""Sealing an hour: its DataWriter files compacted into one sorted file, deduplicated by
event identity, described by a manifest (lake/manifest.py); late files folded in later.

Which hours are ready is the pipeline's call (pipeline/sealing.py: nothing more can
arrive for them); this module does the file work, crash-safe at every step:

1. DuckDB reads the hour's files, keeps each event once (by identity, the ledger's
   ``identity_sql``; the copy with the lowest stream ID wins) and sorts by ``did,
   time_us``, out of core under ``lake.seal_memory_mb`` (an hour of likes needs no
   hour-sized memory); its rows stream into one file of the lake's schema, under a temp
   name no reader's glob sees (``.tmp-seal-….sealing``: not ``*.parquet``, and not the
   DataWriter's temp suffix, which it may remove).
2. The temp file is fsync'd, counted, and renamed to ``sealed-{sha256[:16]}.parquet``.
3. The manifest is written (atomically), listing the new file and the files it replaces.
4. The replaced files are removed.

A crash before 2 leaves a temp file (removed next time); between 2 and 3 a ``sealed-``
file no manifest lists (removed: its rows are still in the inputs), between 3 and 4
replaced files the manifest names (removed next time; `skybuffer query` reads a sealed
hour through its manifest, so it never counts them). So a kill -9 anywhere is redone or
finished by the next seal, never a loss or a duplicate.

Late events (DataWriter files that arrive in a sealed hour) are sealed into one more
file: their rows minus the identities the hour already holds, listed in the manifest.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from skybuffer.errors import ConfigError, LakeWriteError, LeaseHeld
from skybuffer.lake import schema as lake_schema
from skybuffer.lake.layout import TIME_FIELDS, Layout, remote, root_path
from skybuffer.lake.ledger import STATE_DIR, identity_sql
from skybuffer.lake.manifest import (
    SEALED_PREFIX,
    FileEntry,
    Manifest,
    read_manifest,
    sha256_of,
    write_manifest,
)
from skybuffer.processes import fsync
from skybuffer.settings import LakeSettings

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-seal-"
TEMP_SUFFIX = ".sealing"


@dataclass
class Hour:
    """One (type, hour) partition directory as it is on disk now."""

    type: str
    directory: str
    bucket: int
    """Hours since the epoch."""
    files: list[str]
    """Data file names (``*.parquet``) in the directory."""
    manifest: Manifest | None = None

    @property
    def label(self) -> str:
        return datetime.fromtimestamp(self.bucket * 3600, UTC).strftime("%Y-%m-%dT%H")

    @property
    def unsealed(self) -> list[str]:
        """Files no manifest lists: the whole hour if open, late files if sealed."""
        listed = self.manifest.names if self.manifest else set()
        replaced = set(self.manifest.replaced) if self.manifest else set()
        return sorted(f for f in self.files if f not in listed and f not in replaced)

    @property
    def sealed(self) -> bool:
        return self.manifest is not None and not self.unsealed

    @property
    def interrupted(self) -> bool:
        """A seal stopped after its manifest: files it replaced are still there."""
        return self.manifest is not None and bool(set(self.manifest.replaced) & set(self.files))


@dataclass
class SealResult:
    hour: str
    type: str
    rows: int = 0
    files_in: int = 0
    duplicates_dropped: int = 0
    late: bool = False
    files: list[str] = field(default_factory=list)


class Sealer:
    """Seals hours of one local lake (a remote lake is not sealed: see docs/QUERYING.md)."""

    def __init__(self, lake: LakeSettings, checkpoint: Callable[[str], None] | None = None) -> None:
        """``checkpoint(step)`` is called between the steps of a seal (crash tests stop
        the process there: pipeline/faults.py)."""
        assert lake.root is not None, "settings fill lake.root"
        self.checkpoint = checkpoint or (lambda step: None)
        if remote(lake.root):
            raise ConfigError(
                f"lake.root {lake.root!r} is remote: sealing needs a local lake for now"
            )
        self.settings = lake
        self.root = root_path(lake.root)
        self.layout = Layout(self.root, lake.path_template)

    @contextmanager
    def exclusive(self, wait: bool = False) -> Iterator[None]:
        """One sealing run (or erasure) per lake: a flock on ``_skybuffer/seal.lock`` the
        kernel releases with a killed process; held elsewhere: LeaseHeld, or ``wait``."""
        directory = os.path.join(self.root, STATE_DIR)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "seal.lock"), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise LeaseHeld(
                        f"another sealing run holds {handle.name}; it finishes by itself"
                    ) from None
                log.warning("Waiting for %s: a sealing run holds it.", handle.name)
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def hours(self, type_: str) -> list[Hour]:
        """Every partition directory of ``type_`` that holds data, oldest first."""
        found = []
        matcher = self.layout.matcher(type_)
        pattern = self.layout.template.format(type=type_, **dict.fromkeys(TIME_FIELDS, "*"))
        for directory in glob.glob(os.path.join(self.root, pattern)):
            relative = os.path.relpath(directory, self.root)
            match = matcher.match(f"{relative}/x.parquet")
            if match is None or not os.path.isdir(directory):
                continue
            year, month, day, hour = (int(match.group(name)) for name in TIME_FIELDS)
            bucket = int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) // 3600
            names = sorted(n for n in os.listdir(directory) if n.endswith(".parquet"))
            if names or os.path.exists(os.path.join(directory, "_manifest.json")):
                found.append(Hour(type_, directory, bucket, names, read_manifest(directory)))
        return sorted(found, key=lambda h: h.bucket)

    def seal(self, hour: Hour) -> SealResult | None:
        """Seal an open hour, or fold a sealed hour's late files in; None if nothing to do."""
        hour = self.recover(hour)
        inputs = hour.unsealed
        if not inputs:
            return None
        result = SealResult(hour.label, hour.type, files_in=len(inputs), late=bool(hour.manifest))
        temp = os.path.join(hour.directory, f"{TEMP_PREFIX}{os.getpid()}{TEMP_SUFFIX}")
        held = (
            [os.path.join(hour.directory, f) for f in sorted(hour.manifest.names)]
            if hour.manifest
            else []
        )
        read = [os.path.join(hour.directory, f) for f in inputs]
        rows, total = self._compact(hour.type, read, held, temp)
        result.rows, result.duplicates_dropped = rows, total - rows
        new_files = list(hour.manifest.files) if hour.manifest else []
        # Everything the manifest says is computed before the rename: from it to the
        # removal of the inputs (the moment a plain reader could see both) is a few ms.
        figures = Figures.of([*held, temp] if rows else held)
        entry = entry_of(temp) if rows else None
        self.checkpoint("seal_before_publish")
        if entry is not None:
            os.replace(temp, os.path.join(hour.directory, entry.name))
            fsync(hour.directory)
            new_files.append(entry)
            result.files.append(entry.name)
        else:
            os.unlink(temp)
        self.checkpoint("seal_before_manifest")
        manifest = self._manifest(hour, new_files, inputs, result, figures)
        write_manifest(hour.directory, manifest)
        self.checkpoint("seal_before_remove")
        self.remove(hour.directory, inputs)
        return result

    def recover(self, hour: Hour) -> Hour:
        """Finish or undo what an interrupted seal left, then look again."""
        directory = hour.directory
        listed = hour.manifest.names if hour.manifest else set()
        for name in os.listdir(directory):
            stale_temp = name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
            orphan = name.startswith(SEALED_PREFIX) and name not in listed
            if stale_temp or orphan:
                log.info("Removing %s, left by a seal that did not finish.", name)
                os.unlink(os.path.join(directory, name))
        if hour.manifest is not None:
            self.remove(directory, [n for n in hour.manifest.replaced if n in hour.files])
        names = sorted(n for n in os.listdir(directory) if n.endswith(".parquet"))
        return Hour(hour.type, directory, hour.bucket, names, read_manifest(directory))

    def _compact(self, type_: str, read: list[str], held: list[str], temp: str) -> tuple[int, int]:
        """Write ``read``'s rows to ``temp``, each identity once and none of ``held``'s;
        (rows written, rows read). DuckDB deduplicates and sorts (out of core); its rows
        stream in row-group-sized batches into a writer of the lake's own schema and
        encodings, so a sealed file reads exactly like the DataWriter's."""
        con = duckdb.connect(config=self._duckdb_config())
        schema = lake_schema.schema(type_)
        rows = 0
        try:
            total = _count(con, sql_list(read))
            relation = con.sql(_dedup_query(type_, read, held))
            batches = relation.to_arrow_reader(self.settings.seal_row_group_rows)
            with self.parquet_writer(type_, temp) as writer:
                for batch in batches:
                    writer.write_table(pa.Table.from_batches([batch]).cast(schema), batch.num_rows)
                    rows += batch.num_rows
        except duckdb.Error as exc:
            raise LakeWriteError(f"sealing {os.path.dirname(temp)} failed: {exc}") from exc
        finally:
            con.close()
        fsync(temp)
        return rows, total

    def parquet_writer(self, type_: str, path: str) -> pq.ParquetWriter:
        """The DataWriter's encodings (lake/writer.py): compression, dictionaries, stats."""
        return pq.ParquetWriter(
            path,
            lake_schema.schema(type_),
            compression=self.settings.compression,
            compression_level=self.settings.compression_level,
            use_dictionary=lake_schema.dictionary_columns(type_),
            write_statistics=lake_schema.statistics_columns(type_),
        )

    def _duckdb_config(self) -> dict[str, str | bool | int | float | list[str]]:
        spill = os.path.join(self.root, "_skybuffer", "seal-spill")
        os.makedirs(spill, exist_ok=True)
        return {
            "memory_limit": f"{self.settings.seal_memory_mb}MB",
            "temp_directory": spill,
            "threads": "2",
            "autoinstall_known_extensions": "false",
            "preserve_insertion_order": "false",
        }

    def _manifest(
        self,
        hour: Hour,
        files: list[FileEntry],
        inputs: list[str],
        result: SealResult,
        figures: Figures,
    ) -> Manifest:
        before = hour.manifest or Manifest(hour.type, hour.label, [], 0, {}, {}, {}, [])
        return Manifest(
            type=hour.type,
            hour=hour.label,
            files=files,
            rows=sum(f.rows for f in files),
            rows_by_operation=figures.operations,
            time_us={"min": figures.low, "max": figures.high},
            cursor={"source": "jetstream", "wire": "v1", "min": figures.low, "max": figures.high},
            schema=[{"name": f.name, "type": str(f.type)} for f in lake_schema.schema(hour.type)],
            replaced=sorted({*before.replaced, *inputs}),
            duplicates_dropped=before.duplicates_dropped + result.duplicates_dropped,
            late_files=before.late_files + (1 if result.late else 0),
            forgotten_rows=before.forgotten_rows,
            sealed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def remove(self, directory: str, names: list[str]) -> None:
        for name in names:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
        fsync(directory)


def entry_of(temp: str) -> FileEntry:
    """The manifest entry of a written temp file, named by its content's SHA-256."""
    digest = sha256_of(temp)
    name = f"{SEALED_PREFIX}{digest[:16]}.parquet"
    return FileEntry(name, os.path.getsize(temp), pq.read_metadata(temp).num_rows, digest)


@dataclass
class Figures:
    """Rows by operation (kind for identity/account events) and the time_us range."""

    operations: dict[str, int]
    low: int | None
    high: int | None

    @classmethod
    def of(cls, paths: list[str]) -> Figures:
        if not paths:
            return cls({}, None, None)
        con = duckdb.connect()
        try:
            source = f"read_parquet({sql_list(paths)})"
            ops = con.execute(
                f"SELECT coalesce(operation, kind), count(*) FROM {source} GROUP BY 1 ORDER BY 1"
            ).fetchall()
            span = con.execute(f"SELECT min(time_us), max(time_us) FROM {source}").fetchall()
        finally:
            con.close()
        low, high = span[0]
        return cls({str(k): int(v) for k, v in ops}, low, high)


def _dedup_query(type_: str, read: list[str], held: list[str]) -> str:
    """The hour's rows, each identity once (the lowest stream ID wins), none of ``held``'s
    files', sorted for readers."""
    identity = identity_sql(type_)
    columns = ", ".join(f'"{f.name}"' for f in lake_schema.schema(type_))
    known = ""
    if held:
        known = f"WHERE {identity} NOT IN (SELECT {identity} FROM read_parquet({sql_list(held)}))"
    first = f"row_number() OVER (PARTITION BY {identity} ORDER BY stream_id, stream_index) = 1"
    return (
        f"SELECT {columns} FROM read_parquet({sql_list(read)}, union_by_name = true) {known} "
        f"QUALIFY {first} ORDER BY did, time_us"
    )


def _count(con: duckdb.DuckDBPyConnection, files: str) -> int:
    rows = con.execute(f"SELECT count(*) FROM read_parquet({files})").fetchall()
    return int(rows[0][0])


def sql_list(paths: list[str]) -> str:
    """A DuckDB list literal of file paths."""
    return "[" + ", ".join(f"'{_quote(p)}'" for p in paths) + "]"


def _quote(text: str) -> str:
    return text.replace("'", "''")
