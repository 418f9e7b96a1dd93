"""The temp files of one batch, before they are published (lake/writer.py)."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skybuffer.buffer.stream_ids import id_key
from skybuffer.lake.erasures import Erasures, forgotten_mask
from skybuffer.lake.layout import ENTRIES_KEY, TEMP_PREFIX, TEMP_SUFFIX, file_name
from skybuffer.lake.writer import LakeWriter, PartFile, failure
from skybuffer.processes import fsync


class StagedBatch:
    """The temp files of one batch, one per hour partition, written row group by row group.

    Rows arrive in chunks of any size (``append``); each partition's rows are held until
    they make a row group: ``lake.row_group_rows`` rows, or ``lake.row_group_bytes`` of
    Arrow memory if that comes first (pyarrow's ParquetWriter closes a row group per
    write, so holding is what keeps row groups that long whatever the chunk). One
    background thread encodes a full row group while the next rows are built; ``append``
    waits for the previous row group first, so at most two row groups are in memory
    whatever the batch size. The rows held across partitions are bounded too: past one
    row group's worth (rows or bytes), the partition holding the most is written as a
    shorter group.
    """

    def __init__(self, lake: LakeWriter, type_: str, tag: str) -> None:
        self.lake = lake
        self.type = type_
        self.tag = tag
        self.parts: dict[int, PartFile] = {}
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._held: dict[int, list[pa.Table]] = {}
        self._held_rows: dict[int, int] = {}
        self._held_bytes: dict[int, int] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lake-stage")
        self._pending: Future[None] | None = None

    def append(self, table: pa.Table, hours: pa.Array) -> None:
        """Hold the rows by partition; write each partition that has a row group's worth."""
        buckets = pc.unique(hours).to_pylist()
        for bucket in buckets:
            rows = table if len(buckets) == 1 else table.filter(pc.equal(hours, bucket))
            part = self.parts.get(bucket) or self._open(bucket)
            part.rows += rows.num_rows
            part.entry_ids.update(pc.unique(rows["stream_id"]).to_pylist())
            self._held.setdefault(bucket, []).append(rows)
            self._held_rows[bucket] = self._held_rows.get(bucket, 0) + rows.num_rows
            self._held_bytes[bucket] = self._held_bytes.get(bucket, 0) + rows.nbytes
        self._write_full()

    def _write_full(self) -> None:
        group, limit = self.lake.settings.row_group_rows, self.lake.settings.row_group_bytes
        for bucket in list(self._held):
            while self._held_rows.get(bucket, 0) >= group:
                self._write_held(bucket, group)
            while self._held_bytes.get(bucket, 0) >= limit:
                rows, size = self._held_rows[bucket], self._held_bytes[bucket]
                self._write_held(bucket, max(1, rows * limit // size))
        while sum(self._held_rows.values()) > group or sum(self._held_bytes.values()) > limit:
            bucket = max(self._held_rows, key=lambda b: self._held_rows[b])
            self._write_held(bucket, self._held_rows[bucket])

    def _write_held(self, bucket: int, rows: int) -> None:
        """Hand the first ``rows`` held rows of a partition to the encoding thread."""
        held = pa.concat_tables(self._held.pop(bucket))
        group, rest = held.slice(0, rows), held.slice(rows)
        del self._held_bytes[bucket]
        if rest.num_rows:
            self._held[bucket], self._held_rows[bucket] = [rest], rest.num_rows
            self._held_bytes[bucket] = rest.nbytes
        else:
            del self._held_rows[bucket]
        del held
        self._wait()
        self._pending = self._pool.submit(self._write_group, bucket, group)

    def _write_group(self, bucket: int, group: pa.Table) -> None:
        try:
            self._writers[bucket].write_table(group, group.num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise failure(self.parts[bucket].directory, exc) from exc

    def finish(self) -> list[PartFile]:
        """Close every file with its entry IDs in the footer, fsync it, and name it."""
        try:
            for bucket in sorted(self._held):
                self._write_held(bucket, self._held_rows[bucket])
            self._wait()
            for bucket, part in self.parts.items():
                writer = self._writers.pop(bucket)
                ids = ",".join(sorted(part.entry_ids, key=id_key))
                writer.add_key_value_metadata({ENTRIES_KEY: ids})
                writer.close()
                if self.lake.local:
                    fsync(part.temp)
                self.lake.verify(part)
                part.name = file_name(part.entry_ids, self.lake.partition)
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise failure(self._where(), exc) from exc
        except BaseException:
            self.abort()
            raise
        finally:
            self._pool.shutdown()
        return [self.parts[b] for b in sorted(self.parts)]

    def abort(self) -> None:
        """Stop, close and remove every temp file of the batch."""
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - the caller is already failing
            pass
        for writer in self._writers.values():
            try:
                writer.close()
            except (OSError, pa.ArrowException):
                pass
        self._writers.clear()
        self._held.clear()
        self._held_rows.clear()
        self._held_bytes.clear()
        self.lake.discard(list(self.parts.values()))
        self._pool.shutdown()

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _open(self, bucket: int) -> PartFile:
        directory = f"{self.lake.layout.root}/{self.lake.layout.partition(self.type, bucket)}"
        self.lake.makedirs(directory)
        self.lake.remove_leftovers(directory)
        temp = f"{directory}/{TEMP_PREFIX}{self.lake.consumer}.{self.tag}-{bucket}{TEMP_SUFFIX}"
        part = PartFile(self.type, directory, temp)
        try:
            self._writers[bucket] = self.lake.parquet_writer(self.type, temp)
        except (OSError, pa.ArrowException) as exc:
            raise failure(directory, exc) from exc
        self.parts[bucket] = part
        return part

    def _where(self) -> str:
        return ", ".join(p.directory for p in self.parts.values()) or self.lake.layout.root


def withhold_staged(lake: LakeWriter, parts: list[PartFile], erasures: Erasures) -> list[PartFile]:
    """The staged files again without the rows of accounts forgotten since they were
    staged (rare: a `lake forget` between staging and publishing), row group by row
    group; a file left empty is dropped. The batch's entries cannot be converted again
    (their payloads are released as they convert), so the files are what is filtered."""
    kept = []
    try:
        for part in parts:
            if _withhold_part(lake, part, erasures):
                kept.append(part)
            else:
                lake.discard([part])
    except (OSError, pa.ArrowException) as exc:
        lake.discard(parts)
        raise failure(parts[0].directory if parts else lake.layout.root, exc) from exc
    return kept


def _withhold_part(lake: LakeWriter, part: PartFile, erasures: Erasures) -> bool:
    """Rewrite one staged file without forgotten accounts; False if no row is left."""
    temp = f"{part.temp.removesuffix(TEMP_SUFFIX)}-withheld{TEMP_SUFFIX}"
    rows, ids = 0, set()
    accounts = list(erasures.accounts.values())
    with lake.parquet_writer(part.type, temp) as writer:
        for batch in pq.ParquetFile(part.temp).iter_batches(lake.settings.row_group_rows):
            table = pa.Table.from_batches([batch])
            mask = forgotten_mask(table, accounts)
            table = table if mask is None else table.filter(pc.invert(mask))
            if table.num_rows:
                writer.write_table(table, table.num_rows)
                rows += table.num_rows
                ids.update(pc.unique(table["stream_id"]).to_pylist())
        if rows:
            writer.add_key_value_metadata({ENTRIES_KEY: ",".join(sorted(ids, key=id_key))})
    if not rows:
        lake.discard([PartFile(part.type, part.directory, temp)])
        return False
    fsync(temp)
    os.replace(temp, part.temp)
    part.rows, part.entry_ids = rows, ids
    lake.verify(part)
    part.name = file_name(ids, lake.partition)
    return True
