"""The lake's sealing, verification and erasure figures, for /metrics: what the sealing
runs and `lake verify` leave in ``{lake}/_skybuffer/`` (seal-stats.json,
verify-stats.json), the erasure requests (erasures.json), and how long the oldest
unsealed hour has been over (the SealOverdue alert's series).

Read at scrape time by the DataWriter-serving process (observability/exporter.py); the
runs themselves are short-lived flow-run processes, so the files are their memory.
"""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from skybuffer.lake.erasures import Erasures
from skybuffer.lake.ledger import STATE_DIR
from skybuffer.lake.manifest import MANIFEST, SEAL_STATS, VERIFY_STATS, read_figures

HOUR_SECONDS = 3600


def lake_state(root: Path) -> dict[str, float]:
    """The figures of both files, and the oldest open hour's age past its end."""
    state = read_figures(root / STATE_DIR / SEAL_STATS)
    state |= {f"verify_{k}": v for k, v in read_figures(root / STATE_DIR / VERIFY_STATS).items()}
    state |= _erasure_figures(root)
    oldest = _oldest_open_hour_end(root)
    if oldest is not None:
        state["oldest_open_hour_age_seconds"] = max(0.0, time.time() - oldest)
    return state


def _erasure_figures(root: Path) -> dict[str, float]:
    """Erasure requests (`lake forget`) still pending, since when, and rows removed."""
    try:
        erasures = Erasures(str(root))
        pending = erasures.pending()
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    figures = {
        "erasures_pending": float(len(pending)),
        "forgotten_rows_total": float(
            sum(sum(e.rows_removed.values()) for e in erasures.accounts.values())
        ),
    }
    if pending:
        oldest = min(datetime.fromisoformat(e.requested_at).timestamp() for e in pending)
        figures["oldest_erasure_age_seconds"] = max(0.0, time.time() - oldest)
    return figures


def _oldest_open_hour_end(root: Path) -> float | None:
    """End (unix time) of the oldest hour directory without a manifest, any type."""
    oldest: float | None = None
    for manifestless in _open_hours(root):
        end = manifestless + HOUR_SECONDS
        oldest = end if oldest is None else min(oldest, end)
    return oldest


def _open_hours(root: Path) -> Iterator[float]:
    """Start (unix time) of each hour directory with data files and no manifest, read
    from the hive path (year=/month=/day=/hour=) whatever the template's order."""
    for directory, _, files in os.walk(root):
        if STATE_DIR in directory or MANIFEST in files:
            continue
        if not any(f.endswith(".parquet") for f in files):
            continue
        fields = dict(part.split("=", 1) for part in Path(directory).parts if "=" in part)
        try:
            moment = (
                int(fields["year"]),
                int(fields["month"]),
                int(fields["day"]),
                int(fields["hour"]),
            )
        except (KeyError, ValueError):
            continue
        yield float(calendar.timegm((*moment, 0, 0)))


def seal_families(state: dict[str, float]) -> Iterator[Metric]:
    for name, key, doc in (
        ("skybuffer_seal_hours_total", "hours_sealed_total", "Hours (per type) sealed."),
        (
            "skybuffer_seal_late_folds_total",
            "late_folded_total",
            "Late events folded into sealed hours (seals of late files).",
        ),
        (
            "skybuffer_seal_duplicates_dropped_total",
            "duplicates_dropped_total",
            "Duplicate events (by identity) dropped by sealing.",
        ),
        ("skybuffer_seal_runs_total", "runs_total", "Sealing runs finished."),
        (
            "skybuffer_lake_forgotten_rows_total",
            "forgotten_rows_total",
            "Rows removed from the lake by finished erasure requests (`lake forget`).",
        ),
    ):
        yield CounterMetricFamily(name.removesuffix("_total"), doc, value=state.get(key, 0.0))
    for name, key, doc in (
        (
            "skybuffer_seal_last_run_timestamp_seconds",
            "last_run",
            "Unix time the last sealing run finished (0: never).",
        ),
        (
            "skybuffer_seal_last_duration_seconds",
            "last_seconds",
            "How long the last sealing run took.",
        ),
        (
            "skybuffer_seal_waiting_hours",
            "waiting",
            "Open hours the last sealing run found not ready yet.",
        ),
        (
            "skybuffer_seal_oldest_open_hour_age_seconds",
            "oldest_open_hour_age_seconds",
            "Seconds since the end of the oldest hour still open (0: none).",
        ),
        (
            "skybuffer_lake_erasures_pending",
            "erasures_pending",
            "Erasure requests (`lake forget`) recorded and not finished yet.",
        ),
        (
            "skybuffer_lake_oldest_erasure_age_seconds",
            "oldest_erasure_age_seconds",
            "Seconds since the oldest pending erasure request was made (0: none).",
        ),
        (
            "skybuffer_lake_verify_problems",
            "verify_problems",
            "Problems the last `lake verify` found (0 when none, or never run).",
        ),
        (
            "skybuffer_lake_verify_last_run_timestamp_seconds",
            "verify_last_run",
            "Unix time of the last `lake verify` (0: never).",
        ),
    ):
        yield GaugeMetricFamily(name, doc, value=state.get(key, 0.0))
