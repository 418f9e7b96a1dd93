"""What the lake holds, hour by hour (`skybuffer lake status`), and whether its sealed
hours are what their manifests say (`skybuffer lake verify`).

Verify checks, for every sealed hour: each listed file exists with its size, SHA-256 and
row count; no event identity occurs twice across its files; no file the seal replaced is
left (an interrupted seal: the next `lake seal` finishes it). For every type, an hour
with no data between its first and its last is a gap. Files a sealed hour does not list
are late events waiting for the next seal: reported, not a problem.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from skybuffer.constants import TYPES
from skybuffer.lake.ledger import STATE_DIR, identity_sql
from skybuffer.lake.manifest import VERIFY_STATS, sha256_of, write_figures
from skybuffer.lake.sealing import Hour, Sealer, sql_list
from skybuffer.settings import LakeSettings


@dataclass
class HourFigures:
    type: str
    hour: str
    state: str
    """sealed, open, or late (sealed, with late files waiting for the next seal)."""
    files: int
    rows: int
    bytes: int


def lake_hours(lake: LakeSettings, types: tuple[str, ...] = TYPES) -> list[HourFigures]:
    """Every hour of every type: its state, files, rows (from the footers) and bytes."""
    sealer = Sealer(lake)
    figures = []
    for type_ in types:
        for hour in sealer.hours(type_):
            paths = [os.path.join(hour.directory, f) for f in _readable(hour)]
            rows = sum(pq.read_metadata(p).num_rows for p in paths)
            size = sum(os.path.getsize(p) for p in paths)
            state = "open" if hour.manifest is None else "late" if hour.unsealed else "sealed"
            figures.append(HourFigures(type_, hour.label, state, len(paths), rows, size))
    return figures


def _readable(hour: Hour) -> list[str]:
    """The files that hold the hour's rows: the manifest's and late ones (not replaced)."""
    if hour.manifest is None:
        return hour.files
    return sorted(hour.manifest.names | set(hour.unsealed))


@dataclass
class Problem:
    type: str
    hour: str
    problem: str


@dataclass
class VerifyReport:
    sealed_hours: int = 0
    open_hours: int = 0
    late_files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sealed_hours": self.sealed_hours,
            "open_hours": self.open_hours,
            "late_files": self.late_files,
            "problems": [asdict(p) for p in self.problems],
        }


def verify_lake(lake: LakeSettings, types: tuple[str, ...] = TYPES) -> VerifyReport:
    """Every manifest against its files, and the gaps (module docstring)."""
    sealer = Sealer(lake)
    report = VerifyReport()
    for type_ in types:
        hours = sealer.hours(type_)
        for hour in hours:
            if hour.manifest is None:
                report.open_hours += 1
                continue
            report.sealed_hours += 1
            report.late_files += len(hour.unsealed)
            report.problems += [Problem(type_, hour.label, p) for p in _check(hour)]
        report.problems += _gaps(type_, hours)
    return report


def record_verify(lake: LakeSettings, report: VerifyReport) -> None:
    """Leave the result where /metrics reads it (``_skybuffer/verify-stats.json``)."""
    figures = {"problems": float(len(report.problems)), "last_run": time.time()}
    write_figures(Path(Sealer(lake).root, STATE_DIR, VERIFY_STATS), figures)


def _check(hour: Hour) -> list[str]:
    assert hour.manifest is not None
    problems = []
    for entry in hour.manifest.files:
        path = os.path.join(hour.directory, entry.name)
        if not os.path.exists(path):
            problems.append(f"{entry.name} is listed but missing")
            continue
        if os.path.getsize(path) != entry.bytes or sha256_of(path) != entry.sha256:
            problems.append(f"{entry.name} does not match its checksum (changed or damaged)")
        elif pq.read_metadata(path).num_rows != entry.rows:
            problems.append(f"{entry.name} holds a different number of rows than listed")
    left = sorted(set(hour.manifest.replaced) & set(hour.files))
    if left:
        problems.append(
            f"{len(left)} replaced files are still there (an interrupted seal): "
            "`skybuffer lake seal` finishes it"
        )
    if not problems:
        duplicates = _duplicates(hour)
        if duplicates:
            problems.append(f"{duplicates} events occur more than once")
    return problems


def _duplicates(hour: Hour) -> int:
    assert hour.manifest is not None
    paths = [os.path.join(hour.directory, f.name) for f in hour.manifest.files]
    if not paths:
        return 0
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT count(*) - count(DISTINCT {identity_sql(hour.type)}) "
            f"FROM read_parquet({sql_list(paths)})"
        ).fetchall()
    finally:
        con.close()
    return int(rows[0][0])


def _gaps(type_: str, hours: list[Hour]) -> list[Problem]:
    """Hours with no data between the type's first and last hour."""
    if not hours:
        return []
    present = {h.bucket for h in hours}
    missing = [b for b in range(min(present), max(present) + 1) if b not in present]
    return [
        Problem(type_, Hour(type_, "", bucket, []).label, "no data in this hour (a gap)")
        for bucket in missing
    ]
