"""Where lake files go and what they are called: the partition directories of
``lake.path_template``, ``part-{first}-{last}.parquet`` names from the entries a file
holds (their IDs also in its footer, ``ENTRIES_KEY``), the temp names no reader sees, and
the filesystem of the root (a local path or any URI pyarrow knows)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.fs as pafs

from skybuffer.buffer.stream_ids import id_key
from skybuffer.errors import ConfigError

ENTRIES_KEY = b"skybuffer.entries"
TIME_FIELDS = ("year", "month", "day", "hour")
NAME_RE = re.compile(r"^part-(\d+)_(\d+)-(\d+)_(\d+)\.parquet$")
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".inprogress"


def file_name(entry_ids: Iterable[str], partition: str = "") -> str:
    """``part-{first}-{last}.parquet`` from the stream IDs a file holds;
    ``part-{partition}-{first}-{last}.parquet`` for a partition of a partitioned buffer
    (its stream IDs are its own: two partitions may hold the same IDs)."""
    ordered = sorted(entry_ids, key=id_key)
    first, last = (i.replace("-", "_") for i in (ordered[0], ordered[-1]))
    tag = f"{partition}-" if partition else ""
    return f"part-{tag}{first}-{last}.parquet"


def name_re(partition: str = "") -> re.Pattern[str]:
    """Matches the names ``file_name`` gives one partition's files (and no other's)."""
    if not partition:
        return NAME_RE
    return re.compile(rf"^part-{re.escape(partition)}-(\d+)_(\d+)-(\d+)_(\d+)\.parquet$")


def remote(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def root_path(root: str) -> str:
    """The root as readers address it: an absolute local path, or the URI."""
    return root.rstrip("/") if remote(root) else os.path.abspath(root.removeprefix("file://"))


def open_filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the root path in it: a local path, or any URI pyarrow
    knows (s3://bucket/prefix, gs://, hdfs://)."""
    if remote(root):
        try:
            fs, path = pafs.FileSystem.from_uri(root)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"lake.root {root!r} is not a usable filesystem URI: {exc}") from exc
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), root_path(root)


class Layout:
    """Where each type's partitions live under the root, from ``lake.path_template``."""

    def __init__(self, root: str, template: str) -> None:
        names = set(re.findall(r"{(\w*)}", template))
        if names != {"type", *TIME_FIELDS}:
            raise ConfigError(
                f"lake.path_template {template!r} must use exactly the placeholders "
                "{type}, {year}, {month}, {day} and {hour}"
            )
        self.root = root
        self.template = template.strip("/")

    def partition(self, type_: str, hour_bucket: int) -> str:
        """Relative directory of the partition of ``hour_bucket`` (hours since epoch)."""
        t = datetime.fromtimestamp(hour_bucket * 3600, UTC)
        fields = (f"{t.year:04d}", f"{t.month:02d}", f"{t.day:02d}", f"{t.hour:02d}")
        return self.template.format(type=type_, **dict(zip(TIME_FIELDS, fields, strict=True)))

    def glob(self, type_: str) -> str:
        """Every data file of a type: the pattern DuckDB's read_parquet takes."""
        pattern = self.template.format(type=type_, **dict.fromkeys(TIME_FIELDS, "*"))
        return f"{self.root}/{pattern}/*.parquet"

    def matcher(self, type_: str) -> re.Pattern[str]:
        """Matches a file path relative to the root; groups year, month, day, hour."""
        parts = re.split(r"({\w+})", self.template)
        regex = "".join(_pattern(part, type_) for part in parts)
        return re.compile(rf"^{regex}/[^/]+\.parquet$")


def id_span(match: re.Match[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(first, last) entry IDs of a file name's match, as sortable pairs."""
    a, b, c, d = (int(g) for g in match.groups())
    return (a, b), (c, d)


def _pattern(part: str, type_: str) -> str:
    """The regex of one piece of the template: the type, a named number, or literal text."""
    if part == "{type}":
        return re.escape(type_)
    if part.startswith("{"):
        return rf"(?P<{part[1:-1]}>\d+)"
    return re.escape(part)
