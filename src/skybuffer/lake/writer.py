"""Atomic, deterministic Parquet files in hive partitions: the lake half of exactly-once.

A batch's rows of one type are split by the UTC hour of ``time_us``; each partition gets
one file named by the first and last stream IDs of the entries whose rows it holds
(``part-{first}-{last}.parquet``, '-' inside an ID written '_'), the entry IDs also
stored in the file's footer (``skybuffer.entries``). Kafka Connect's S3 sink is the
model: names from offsets, the offset committed only after the file is durable.

Publishing a batch:

1. ``StagedBatch`` (lake/staging.py): rows arrive chunk by chunk; each partition's rows are
   appended to ``.tmp-{consumer}.{tag}-{hour}.inprogress`` in the partition directory
   (a dot-name without the .parquet suffix: no reader's ``*.parquet`` glob and no
   pyarrow dataset sees it). ``finish`` writes the footer with the entry IDs, fsyncs the
   file and names it. Leftovers of a killed run are removed when a directory is opened:
   this consumer's own, and anyone's older than the stale age.
2. ``publish``: per partition, files of an earlier, unacknowledged attempt that hold any
   entry of this batch are deleted; the temp file is renamed to its final name; the
   directory is fsync'd (new directories too, up the tree).

Why deleting by footer and not only by name: after a crash the entries may come back in
different batches (another consumer claims part of them, or batch_events changed), so a
rerun can produce other names. Any lake file holding an entry that is still pending can
only come from an attempt that never committed (commit is atomic and removes the entry),
so it may be deleted: every row it held belongs to a pending entry and will be rewritten.
Files whose entries were committed are never touched: no later batch holds their entries.

Everything goes through pyarrow's filesystem layer, so ``lake.root = "s3://bucket/lake"``
needs no other change: there the temp object is moved (copied) to its final key, which
appears atomically, and fsync does not apply. Only the local filesystem is tested here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from skybuffer.buffer.stream_ids import id_key
from skybuffer.errors import LakeWriteError
from skybuffer.lake import schema as lake_schema
from skybuffer.lake.layout import (
    ENTRIES_KEY,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    Layout,
    file_name,
    id_span,
    name_re,
    open_filesystem,
)
from skybuffer.processes import fsync
from skybuffer.settings import LakeSettings

log = logging.getLogger(__name__)

PUBLISH_LOCK = ".skybuffer-publish.lock"
QUARANTINE_DIR = "_quarantine"


@dataclass
class PartFile:
    """One staged file of a batch: where it goes and which entries' rows it holds."""

    type: str
    directory: str
    temp: str
    rows: int = 0
    entry_ids: set[str] = field(default_factory=set)
    name: str = ""

    @property
    def path(self) -> str:
        return f"{self.directory}/{self.name}"


@dataclass(frozen=True)
class WrittenFile:
    type: str
    path: str
    partition: str
    rows: int
    bytes: int


class LakeWriter:
    """Writes batches of rows into the lake atomically; see the module docstring."""

    def __init__(
        self,
        lake: LakeSettings,
        consumer: str,
        stale_temp_seconds: float,
        exclusive: bool = False,
        partition: str = "",
    ) -> None:
        """``partition``: the buffer partition this writer drains ("p1"; "" unpartitioned),
        which its file names carry (lake/layout.py)."""
        assert lake.root is not None, "settings fill lake.root"
        self.settings = lake
        self.fs, root = open_filesystem(lake.root)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.layout = Layout(root, lake.path_template)
        self.consumer = re.sub(r"[^A-Za-z0-9_.-]", "_", consumer)
        self.stale_temp_seconds = stale_temp_seconds
        self.exclusive = exclusive
        """True for the lease holder: the only writer of this lake."""
        self.partition = partition
        self.name_re = name_re(partition)

    def parquet_writer(self, type_: str, temp: str) -> pq.ParquetWriter:
        return pq.ParquetWriter(
            temp,
            lake_schema.schema(type_),
            filesystem=self.fs,
            compression=self.settings.compression,
            compression_level=self.settings.compression_level,
            use_dictionary=lake_schema.dictionary_columns(type_),
            write_statistics=lake_schema.statistics_columns(type_),
        )

    def publish(
        self,
        parts: list[PartFile],
        batch_ids: set[str],
        on_published: Callable[[PartFile], None] | None = None,
    ) -> list[WrittenFile]:
        """Replace earlier attempts of these entries with the staged files, durably."""
        written = []
        keys = [id_key(i) for i in batch_ids]
        span = (min(keys), max(keys))
        for part in parts:
            try:
                self._remove_stale(part, batch_ids, span)
                self.fs.move(part.temp, part.path)  # a rename on a local filesystem
                part.temp = ""
                if self.local:
                    fsync(part.directory)
                size = self.fs.get_file_info(part.path).size or 0
            except (OSError, pa.ArrowException) as exc:
                raise failure(part.path, exc) from exc
            relative = part.directory[len(self.layout.root) + 1 :]
            written.append(WrittenFile(part.type, part.path, relative, part.rows, size))
            if on_published is not None:
                on_published(part)
        return written

    def verify(self, part: PartFile) -> None:
        """A staged file gets its final name only if its footer reads back with every row
        and entry it should hold (a disk fault or a concurrent writer would show here)."""
        try:
            metadata = pq.read_metadata(part.temp, filesystem=self.fs)
        except (OSError, pa.ArrowException) as exc:
            raise failure(part.temp, f"the written file does not read back: {exc}") from exc
        held = (metadata.metadata or {}).get(ENTRIES_KEY, b"").decode().split(",")
        if metadata.num_rows != part.rows or set(held) != part.entry_ids:
            raise failure(
                part.temp,
                f"the written file reads back {metadata.num_rows} rows of {len(held)} "
                f"entries, not {part.rows} rows of {len(part.entry_ids)}",
            )

    def publishing(self) -> contextlib.AbstractContextManager[None]:
        """One publisher at a time on this lake, per buffer partition (an flock, released
        by the kernel if the process dies). Held from the lease check to the commit, so a
        stale owner that stalls inside that step delays the new owner's publish instead of
        overlapping it; the writers of other partitions (other leases, other file names)
        publish beside it. Object stores have no such lock: there the lease check alone
        fences (documented)."""
        if not self.local:
            return contextlib.nullcontext()
        return publish_lock(self.layout.root, self.partition)

    def retract(self, files: list[WrittenFile]) -> None:
        """Delete files this writer just published and may not commit (its lease passed to
        another owner, who rewrites their entries)."""
        for written in files:
            log.warning(
                "Retracting %s: this DataWriter lost its lease before committing it.", written.path
            )
            _silently(self.fs.delete_file, written.path)

    def files_between(self, type_: str, low: str, high: str) -> list[str]:
        """Paths of the type's files holding entries with IDs in (low, high]."""
        lo, hi = id_key(low), id_key(high)
        root, matcher = self.layout.root, self.layout.matcher(type_)
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        paths = []
        for info in self.fs.get_file_info(selector):
            match = self.name_re.match(info.base_name)
            if info.type != pafs.FileType.File or match is None:
                continue
            if not matcher.match(info.path[len(root) + 1 :]):
                continue
            first, last = id_span(match)
            if last > lo and first <= hi:
                paths.append(info.path)
        return sorted(paths)

    def keep_only(self, path: str, keep: set[str]) -> pa.Table:
        """Rewrite a file to hold only the rows of the entries ``keep`` (the others are
        still in the buffer and will be written again); returns the rows kept.

        The kept file is named by its entries and published like any other before the
        original goes, so a crash in between leaves a state that the same call repairs."""
        table = pq.read_table(path, filesystem=self.fs)
        held = set(pc.unique(table["stream_id"]).to_pylist())
        wanted = pa.array(sorted(keep & held), pa.string())
        kept = table.filter(pc.is_in(table["stream_id"], value_set=wanted))
        if kept.num_rows == table.num_rows:
            return kept
        directory = path.rsplit("/", 1)[0]
        if kept.num_rows:
            type_ = self._type_of(path)
            part = PartFile(
                type_,
                directory,
                f"{directory}/{TEMP_PREFIX}{self.consumer}.keep{TEMP_SUFFIX}",
                kept.num_rows,
                keep & held,
            )
            writer = self.parquet_writer(type_, part.temp)
            writer.write_table(kept, self.settings.row_group_rows)
            ids = ",".join(sorted(part.entry_ids, key=id_key))
            writer.add_key_value_metadata({ENTRIES_KEY: ids})
            writer.close()
            if self.local:
                fsync(part.temp)
            self.verify(part)
            part.name = file_name(part.entry_ids, self.partition)
            self.fs.move(part.temp, part.path)
        if not kept.num_rows or part.path != path:
            self.fs.delete_file(path)
        if self.local:
            fsync(directory)
        return kept

    def _type_of(self, path: str) -> str:
        relative = path[len(self.layout.root) + 1 :]
        for type_ in lake_schema.TYPES:
            if self.layout.matcher(type_).match(relative):
                return type_
        raise LakeWriteError(f"{path} is not a file of any type's partitions")

    def discard(self, parts: list[PartFile]) -> None:
        """Remove the temp files of a batch that will not be published."""
        for part in parts:
            if part.temp:
                _silently(self.fs.delete_file, part.temp)
                part.temp = ""

    def _remove_stale(
        self, part: PartFile, batch_ids: set[str], span: tuple[tuple[int, int], tuple[int, int]]
    ) -> None:
        low, high = span
        for info in self._list(part.directory):
            match = self.name_re.match(info.base_name)
            if match is None or info.base_name == part.name:
                continue
            first, last = id_span(match)
            if last < low or first > high:
                continue
            try:
                held = self._entries_of(info.path)
            except (OSError, pa.ArrowException) as exc:
                self.quarantine(info.path, exc)
                continue
            if held & batch_ids:
                replaced = (info.path, len(held & batch_ids))
                log.warning(
                    "Replacing %s: an unacknowledged earlier attempt of %d of these entries.",
                    *replaced,
                )
                self.fs.delete_file(info.path)

    def quarantine(self, path: str, cause: BaseException) -> None:
        """Move an unreadable lake file aside (``_quarantine/`` keeps its relative path),
        so readers never fail on it; entries still in the buffer are written again."""
        relative = path[len(self.layout.root) + 1 :]
        target = f"{self.layout.root}/{QUARANTINE_DIR}/{relative}"
        log.error(
            "%s cannot be read (%s); moved to %s. Entries of it still in the buffer are "
            "written again; others are only in that file.",
            path,
            cause,
            target,
        )
        try:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            self.fs.move(path, target)
        except (OSError, pa.ArrowException) as exc:
            raise failure(path, exc) from exc

    def entries_of(self, path: str) -> set[str]:
        """The entry IDs a file's footer lists."""
        return self._entries_of(path)

    def _entries_of(self, path: str) -> set[str]:
        metadata = pq.read_metadata(path, filesystem=self.fs).metadata or {}
        return set(metadata.get(ENTRIES_KEY, b"").decode().split(",")) - {""}

    def remove_leftovers(self, directory: str) -> None:
        """Temp files of a killed run: this consumer's, or anyone's past the stale age, or
        anyone's at all for the lease holder (other writers are dead or fenced)."""
        own = f"{TEMP_PREFIX}{self.consumer}."
        cutoff = time.time() - self.stale_temp_seconds
        for info in self._list(directory):
            name = info.base_name
            if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            if self.exclusive or name.startswith(own) or mtime < cutoff:
                log.info("Removing %s, left by a writer that did not finish.", info.path)
                _silently(self.fs.delete_file, info.path)

    def _list(self, directory: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(directory, allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def makedirs(self, directory: str) -> None:
        """Create the partition directories, fsyncing each new one's parent (local)."""
        if not self.local:
            self.fs.create_dir(directory, recursive=True)
            return
        missing = []
        path = directory
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        try:
            for path in reversed(missing):
                try:
                    os.mkdir(path)
                except FileExistsError:
                    if not os.path.isdir(path):
                        raise failure(directory, f"{path} exists and is not a directory") from None
                fsync(os.path.dirname(path))
        except OSError as exc:
            raise failure(directory, exc) from exc


@contextlib.contextmanager
def publish_lock(root: str, partition: str = "") -> Iterator[None]:
    """The publish lock of one buffer partition's files in a local lake (``publishing``);
    the eraser takes it too (lake/eraser.py) to rewrite files a DataWriter may replace."""
    os.makedirs(root, exist_ok=True)
    lock = PUBLISH_LOCK.replace(".lock", f"-{partition}.lock") if partition else PUBLISH_LOCK
    fd = os.open(os.path.join(root, lock), os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning(
                "Waiting for the lake's publish lock %s: another DataWriter holds it (one "
                "stopped inside its publish step holds it until it resumes or dies).",
                lock,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def failure(path: str, exc: BaseException | str) -> LakeWriteError:
    """The error of a failed lake write: the path, the cause, and what happens next."""
    if isinstance(exc, str):
        detail = exc
    else:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = getattr(exc, "filename", None)
        detail = f"{cause} ({where})" if where and where != path else cause
    return LakeWriteError(
        f"cannot write {path}: {detail}; nothing of this batch was acknowledged, the next "
        "run retries it"
    )


def _silently(func: Callable[[str], object], path: str) -> None:
    try:
        func(path)
    except (OSError, pa.ArrowException):
        pass
