"""Removing one account's rows from the lake's files, sealed and open (`lake forget`).

The caller (pipeline/erasing.py) records the request first (lake/erasures.py) and holds
the sealing lock, so no seal runs beside it. For each type, one DuckDB scan over every
file a reader reads finds those holding the account's rows (sealed files are sorted by
``did``: their row-group statistics skip the rest); then each such file is rewritten
without them, crash-safe at every step:

- a **sealed** file is replaced the way a seal replaces its inputs (lake/sealing.py): the
  rows kept go to a temp file, renamed ``sealed-{sha256[:16]}.parquet`` (step
  ``forget_before_manifest``), the manifest lists it instead of the old file, which it
  names as replaced and its counts and checksums are recomputed (``forget_before_remove``),
  then the old file goes. An interrupted rewrite is finished or undone by the sealer's
  recovery, and the request, still pending, redoes the rest.
- an **open** (DataWriter) file is rewritten under the same name, footer and entries, by
  an atomic rename over it (``forget_before_replace``), under its buffer partition's
  publish lock, so a DataWriter never replaces it at the same moment.

Rewriting is idempotent (a file without the account's rows is left alone), so redoing a
request removes nothing twice and nothing else: exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skybuffer.errors import LakeWriteError
from skybuffer.lake.erasures import Erasure, forgotten_mask
from skybuffer.lake.layout import ENTRIES_KEY
from skybuffer.lake.manifest import FileEntry, Manifest, write_manifest
from skybuffer.lake.sealing import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    Figures,
    Hour,
    Sealer,
    entry_of,
    sql_list,
)
from skybuffer.processes import fsync

log = logging.getLogger(__name__)

PARTITION_RE = re.compile(r"^part-(p\d+)-")

Locker = Callable[[str], contextlib.AbstractContextManager[None]]
"""The publish lock of a buffer partition ('' unpartitioned): lake/writer.publish_lock."""


class Eraser:
    """Rewrites the files of one lake that hold a forgotten account's rows."""

    def __init__(self, sealer: Sealer, locker: Locker) -> None:
        self.sealer, self.locker = sealer, locker
        self.checkpoint = sealer.checkpoint

    def erase(self, erasure: Erasure, type_: str) -> int:
        """Remove the account's rows from every file of ``type_``; the rows removed.

        Passes until one finds nothing: a DataWriter that meanwhile replaced an open file
        it had read before the request (its rows from a Redis that forgot, lake/writer.py
        ``keep_only``) left a new file the previous pass did not list."""
        removed = total = self._pass(erasure, type_)
        while removed:
            removed = self._pass(erasure, type_)
            total += removed
        return total

    def _pass(self, erasure: Erasure, type_: str) -> int:
        removed = 0
        for hour in self.sealer.hours(type_):
            if hour.interrupted:
                hour = self.sealer.recover(hour)
            hits = self._holding(hour, erasure)
            if not hits:
                continue
            listed = hour.manifest.names if hour.manifest else set()
            sealed = {name: n for name, n in hits.items() if name in listed}
            for name in sorted(set(hits) - set(sealed)):
                removed += self._rewrite_open(hour, name, erasure)
            if sealed:
                removed += self._rewrite_sealed(hour, sorted(sealed), erasure)
        return removed

    def _holding(self, hour: Hour, erasure: Erasure) -> dict[str, int]:
        """The files a reader of the hour reads that hold the account's rows, and how many."""
        replaced = set(hour.manifest.replaced) if hour.manifest else set()
        names = [n for n in hour.files if n not in replaced]
        if not names:
            return {}
        paths = [os.path.join(hour.directory, n) for n in names]
        bound = "" if erasure.before_us is None else f"AND time_us <= {int(erasure.before_us)}"
        con = duckdb.connect(config={"threads": "2", "autoinstall_known_extensions": "false"})
        try:
            found = con.execute(
                f"SELECT filename, count(*) FROM read_parquet({sql_list(paths)}, "
                f"filename = true, union_by_name = true) WHERE did = $did {bound} GROUP BY 1",
                {"did": erasure.did},
            ).fetchall()
        except duckdb.Error as exc:
            if not all(os.path.exists(p) for p in paths):
                # A DataWriter replaced an open file while it was read: look again.
                return self._holding(self.sealer.recover(hour), erasure)
            raise LakeWriteError(f"cannot read {hour.directory} to forget: {exc}") from exc
        finally:
            con.close()
        return {os.path.basename(str(path)): int(n) for path, n in found}

    def _copy_without(
        self, type_: str, path: str, erasure: Erasure, temp: str, footer: dict[bytes, bytes]
    ) -> tuple[int, int]:
        """Stream ``path``'s rows but the account's into ``temp`` (fsync'd), row group by
        row group, so memory stays one row group whatever the file; (kept, removed)."""
        kept = removed = 0
        try:
            source = pq.ParquetFile(path)
            with self.sealer.parquet_writer(type_, temp) as writer:
                for batch in source.iter_batches(self.sealer.settings.seal_row_group_rows):
                    table = pa.Table.from_batches([batch])
                    mask = forgotten_mask(table, [erasure])
                    if mask is not None:
                        table = table.filter(pc.invert(mask))
                        removed += batch.num_rows - table.num_rows
                    if table.num_rows:
                        writer.write_table(table.cast(writer.schema), table.num_rows)
                        kept += table.num_rows
                if footer:
                    writer.add_key_value_metadata(footer)
        except (OSError, pa.ArrowException) as exc:
            raise LakeWriteError(f"cannot rewrite {path} without {erasure.did}: {exc}") from exc
        fsync(temp)
        return kept, removed

    def _temp(self, hour: Hour) -> str:
        """A name the sealer's recovery removes if a crash leaves it, and no reader sees."""
        return os.path.join(hour.directory, f"{TEMP_PREFIX}forget-{os.getpid()}{TEMP_SUFFIX}")

    def _rewrite_open(self, hour: Hour, name: str, erasure: Erasure) -> int:
        """A DataWriter file, rewritten under its name with its footer (its entries); one
        left with no rows goes (its entries, if still pending, are written again, and the
        DataWriter withholds the account from them)."""
        path = os.path.join(hour.directory, name)
        match = PARTITION_RE.match(name)
        with self.locker(match.group(1) if match else ""):
            if not os.path.exists(path):
                return 0  # replaced by its DataWriter since, after the request: clean
            entries = (pq.read_metadata(path).metadata or {}).get(ENTRIES_KEY, b"")
            temp = self._temp(hour)
            kept, removed = self._copy_without(
                hour.type, path, erasure, temp, {ENTRIES_KEY: entries}
            )
            self.checkpoint("forget_before_replace")
            if removed and kept:
                os.replace(temp, path)
            else:
                os.unlink(temp)
                if removed:
                    os.unlink(path)
            fsync(hour.directory)
        if removed:
            log.info("Forgot %d rows of %s in %s.", removed, erasure.did, path)
        return removed

    def _rewrite_sealed(self, hour: Hour, names: list[str], erasure: Erasure) -> int:
        """Sealed files, replaced by files without the rows, under a new manifest."""
        assert hour.manifest is not None
        files = {f.name: f for f in hour.manifest.files}
        removed = 0
        for name in names:
            temp = self._temp(hour)
            kept, gone = self._copy_without(
                hour.type, os.path.join(hour.directory, name), erasure, temp, {}
            )
            removed += gone
            del files[name]
            if kept:
                entry = entry_of(temp)
                os.replace(temp, os.path.join(hour.directory, entry.name))
                files[entry.name] = entry
            else:
                os.unlink(temp)
        fsync(hour.directory)
        self.checkpoint("forget_before_manifest")
        manifest = self._manifest(hour, hour.manifest, list(files.values()), names, removed)
        write_manifest(hour.directory, manifest)
        self.checkpoint("forget_before_remove")
        self.sealer.remove(hour.directory, names)
        log.info(
            "Forgot %d rows of %s in sealed hour %s %s.",
            removed,
            erasure.did,
            hour.type,
            hour.label,
        )
        return removed

    def _manifest(
        self, hour: Hour, before: Manifest, files: list[FileEntry], names: list[str], removed: int
    ) -> Manifest:
        figures = Figures.of([os.path.join(hour.directory, f.name) for f in files])
        span = {"min": figures.low, "max": figures.high}
        return replace(
            before,
            files=files,
            rows=sum(f.rows for f in files),
            rows_by_operation=figures.operations,
            time_us=span,
            cursor={**before.cursor, **span},
            replaced=sorted({*before.replaced, *names}),
            forgotten_rows=before.forgotten_rows + removed,
            sealed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
