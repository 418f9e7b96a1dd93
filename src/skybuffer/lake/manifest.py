"""A sealed hour's ``_manifest.json``: what the hour holds, file by file, checkable.

Written in the partition directory (``{type}/year=/month=/day=/hour=/_manifest.json``)
once the hour is sealed (lake/sealing.py): ``sealed``, the rows by operation, the hour and
the events' time range, the Jetstream cursor range (a v1 cursor is the events' time_us),
every file with its size, row count and SHA-256, the files it replaced (removed by the
seal; a reader must not read them if a crash left them), the schema and the writer's
version. A name that does not end in ``.parquet`` (and starts with ``_``): no reader's
glob of data files sees it.

Readers that want exactly the sealed rows read the files the manifest lists
(``listed_files``); plain ``*.parquet`` readers are right too except for the moment
between a seal's rename and its removal of the replaced files (docs/QUERYING.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skybuffer import __version__
from skybuffer.processes import atomic_write, fsync

MANIFEST = "_manifest.json"
SEALED_PREFIX = "sealed-"
"""Sealed files are ``sealed-{sha256[:16]}.parquet``."""
FORMAT = 1


@dataclass
class FileEntry:
    name: str
    bytes: int
    rows: int
    sha256: str


@dataclass
class Manifest:
    type: str
    hour: str
    """The hour, ISO (UTC): ``2026-12-02T04``."""
    files: list[FileEntry]
    rows: int
    rows_by_operation: dict[str, int]
    time_us: dict[str, int | None]
    """``min`` and ``max`` of the events' time_us."""
    cursor: dict[str, Any]
    """The source cursor range: Jetstream v1's cursor is time_us."""
    schema: list[dict[str, str]]
    replaced: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0
    late_files: int = 0
    """Files added after the first seal (late events), deduplicated."""
    forgotten_rows: int = 0
    """Rows removed by erasure requests (`lake forget`, lake/eraser.py)."""
    sealed: bool = True
    sealed_at: str = ""
    writer_version: str = __version__
    format: int = FORMAT

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["files"] = [FileEntry(**f) for f in data.get("files", [])]
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def names(self) -> set[str]:
        return {f.name for f in self.files}


def read_manifest(directory: str) -> Manifest | None:
    """The directory's manifest, or None (an open hour)."""
    try:
        with open(os.path.join(directory, MANIFEST)) as handle:
            return Manifest.from_json(handle.read())
    except FileNotFoundError:
        return None


def write_manifest(directory: str, manifest: Manifest) -> None:
    """Replace the manifest atomically and durably: a reader sees the old or the new."""
    path = os.path.join(directory, MANIFEST)
    temp = path + ".tmp"
    with open(temp, "w") as handle:
        handle.write(manifest.as_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync(directory)


def listed_files(directory: str) -> list[str] | None:
    """Paths of the files a sealed hour's manifest lists (None: no manifest)."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    return [os.path.join(directory, f.name) for f in manifest.files]


SEAL_STATS = "seal-stats.json"
VERIFY_STATS = "verify-stats.json"
"""The sealing runs' and `lake verify`'s figures, in the lake's ``_skybuffer/`` (they run
in short-lived processes; the DataWriter-serving process exports what they leave)."""


def read_figures(path: Path) -> dict[str, float]:
    """A figures file ({} when missing or unreadable: a new lake has none)."""
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return {}


def write_figures(path: Path, figures: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(figures, indent=2) + "\n")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
