"""Which hours can be sealed, and one sealing run (`skybuffer lake seal`, the hourly flow).

An hour can be sealed when no more events for it can arrive from where the pipeline
stands: its end plus ``lake.seal_grace_seconds`` lies before the **watermark**, the
earliest of
- now,
- every Jetstream cursor's resume point (a v1 cursor is a time_us: what the source sends
  next is from there on), in every partition,
- every buffered entry not yet trimmed from the streams (its Redis ID is when it was
  ingested; its events are at most that recent), in every partition.
An event that arrives later all the same (a Jetstream host failover replays an hour
back, each host stamping its own time_us) is a late event: the DataWriter writes it into
its hour as usual, and the next run folds it into the sealed hour, deduplicated
(lake/sealing.py). So sealing can be early, never lossy.

One sealing run at a time per lake: a lock file (``_skybuffer/seal.lock``, flock), which a
killed run's process releases with it. Each run first finishes any erasure request
(`lake forget`) a killed run left pending (pipeline/erasing.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skybuffer.constants import CURSOR_POSITION, TYPES
from skybuffer.lake.ledger import STATE_DIR
from skybuffer.lake.manifest import SEAL_STATS, read_figures, write_figures
from skybuffer.lake.schema import HOUR_US
from skybuffer.lake.sealing import Hour, Sealer, SealResult
from skybuffer.observability.status import BufferView
from skybuffer.pipeline.erasing import finish_erasures
from skybuffer.settings import Settings

log = logging.getLogger(__name__)

COUNTERS = ("hours_sealed_total", "late_folded_total", "duplicates_dropped_total", "runs_total")


@dataclass
class SealReport:
    """What one sealing run did."""

    watermark_us: int
    sealed: list[SealResult] = field(default_factory=list)
    waiting: int = 0
    """Open hours not ready yet (their end plus the grace is after the watermark)."""
    seconds: float = 0.0

    @property
    def late(self) -> int:
        return sum(1 for r in self.sealed if r.late)

    @property
    def duplicates_dropped(self) -> int:
        return sum(r.duplicates_dropped for r in self.sealed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "watermark_us": self.watermark_us,
            "hours_sealed": sum(1 for r in self.sealed if not r.late),
            "late_folded": self.late,
            "duplicates_dropped": self.duplicates_dropped,
            "rows": sum(r.rows for r in self.sealed),
            "waiting": self.waiting,
            "seconds": round(self.seconds, 3),
            "sealed": [asdict(r) for r in self.sealed],
        }


def watermark_us(settings: Settings, now_us: int | None = None) -> int:
    """The time before which no more events can arrive (module docstring)."""
    view = BufferView(settings)
    mark = now_us if now_us is not None else time.time_ns() // 1000
    for number in range(view.partitions.count):
        keys = view.partitions.keys(number)
        client = view.clients[keys.prefix]
        for type_ in TYPES:
            first = client.xrange(keys.stream(type_), count=1)
            if first:
                mark = min(mark, _ms_of(first[0][0]) * 1000)
        for key in client.scan_iter(match=keys.cursor("*"), count=1000):
            position = client.hget(key, CURSOR_POSITION)
            resume = _cursor_us(position.decode() if isinstance(position, bytes) else None)
            if resume is not None:
                mark = min(mark, resume)
    return mark


def _ms_of(entry_id: object) -> int:
    """The milliseconds part of a stream entry ID: when Redis added it."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])


def _cursor_us(position: str | None) -> int | None:
    """A Jetstream v1 position's resume point (``v1:floor:max:host:ids``), else None."""
    if not position or not position.startswith("v1:"):
        return None
    floor = position.split(":")[1]
    return int(floor) if floor.isdigit() else None


def ready(hour: Hour, watermark: int, grace_seconds: float) -> bool:
    return (hour.bucket + 1) * HOUR_US + int(grace_seconds * 1_000_000) <= watermark


def seal_ready(
    settings: Settings,
    types: tuple[str, ...] = TYPES,
    checkpoint: Callable[[str], None] | None = None,
    watermark: int | None = None,
) -> SealReport:
    """Seal every hour that is ready and fold late files into sealed ones, oldest first;
    ``checkpoint`` is called at each step of a seal (fault injection in tests)."""
    sealer = Sealer(settings.lake, checkpoint)
    report = SealReport(watermark if watermark is not None else watermark_us(settings))
    started = time.monotonic()
    with sealer.exclusive():
        finish_erasures(settings, sealer)
        for type_ in types:
            for hour in sealer.hours(type_):
                if hour.interrupted and not hour.unsealed:
                    sealer.seal(hour)  # finishes it: removes what it replaced
                    continue
                if not hour.unsealed:
                    continue
                if hour.manifest is None and not ready(
                    hour, report.watermark_us, settings.lake.seal_grace_seconds
                ):
                    report.waiting += 1
                    continue
                result = sealer.seal(hour)
                if result is not None:
                    report.sealed.append(result)
                    _log(result)
    report.seconds = time.monotonic() - started
    record(sealer.root, report)
    return report


def _log(result: SealResult) -> None:
    what = "late files of" if result.late else "hour"
    log.info(
        "Sealed %s %s %s: %d rows from %d files, %d duplicates dropped.",
        what,
        result.type,
        result.hour,
        result.rows,
        result.files_in,
        result.duplicates_dropped,
    )


def record(root: str, report: SealReport) -> None:
    """Add the run to the lake's sealing figures (``_skybuffer/seal-stats.json``), which
    the DataWriter-serving process exports (observability/lake_state.py)."""
    path = Path(root, STATE_DIR, SEAL_STATS)
    stats = dict.fromkeys(COUNTERS, 0.0) | read_figures(path)
    stats["hours_sealed_total"] += sum(1 for r in report.sealed if not r.late)
    stats["late_folded_total"] += report.late
    stats["duplicates_dropped_total"] += report.duplicates_dropped
    stats["runs_total"] += 1
    stats["last_run"] = time.time()
    stats["last_seconds"] = report.seconds
    stats["waiting"] = report.waiting
    write_figures(path, stats)
