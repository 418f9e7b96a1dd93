"""The lake's sealing, verification and erasure figures on /metrics: what the runs leave
in _skybuffer/, the age of the oldest hour still open (what SealOverdue watches), and
the erasure requests pending (what ErasurePending watches)."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path

from skybuffer.observability.lake_state import lake_state, seal_families


def _hour(root: Path, type_: str, stamp: tuple[int, int, int, int], sealed: bool) -> None:
    year, month, day, hour = stamp
    directory = (
        root / type_ / f"year={year}" / f"month={month:02d}" / f"day={day:02d}" / f"hour={hour:02d}"
    )
    directory.mkdir(parents=True)
    (directory / "part-1_0-2_0.parquet").write_bytes(b"")
    if sealed:
        (directory / "_manifest.json").write_text("{}")


def test_the_oldest_open_hour_and_the_runs_figures_are_exported(tmp_path: Path) -> None:
    _hour(tmp_path, "likes", (2026, 5, 25, 14), sealed=True)
    _hour(tmp_path, "likes", (2026, 5, 25, 15), sealed=False)
    _hour(tmp_path, "posts", (2026, 5, 25, 16), sealed=False)
    state_dir = tmp_path / "_skybuffer"
    state_dir.mkdir()
    (state_dir / "seal-stats.json").write_text(
        json.dumps({"hours_sealed_total": 7, "runs_total": 2})
    )
    (state_dir / "verify-stats.json").write_text(json.dumps({"problems": 3, "last_run": 5}))
    state = lake_state(tmp_path)
    end_of_15 = calendar.timegm((2026, 5, 25, 16, 0, 0))
    assert abs(state["oldest_open_hour_age_seconds"] - (time.time() - end_of_15)) < 60
    samples = {s.name: s.value for family in seal_families(state) for s in family.samples}
    assert samples["skybuffer_seal_hours_total"] == 7
    assert samples["skybuffer_lake_verify_problems"] == 3
    assert samples["skybuffer_seal_last_run_timestamp_seconds"] == 0


def test_a_lake_without_runs_or_open_hours_exports_zeros(tmp_path: Path) -> None:
    samples = {s.name: s.value for f in seal_families(lake_state(tmp_path)) for s in f.samples}
    assert samples["skybuffer_seal_oldest_open_hour_age_seconds"] == 0
    assert samples["skybuffer_seal_runs_total"] == 0


def test_pending_and_finished_erasures_are_exported(tmp_path: Path) -> None:
    from skybuffer.lake.erasures import Erasures

    erasures = Erasures(str(tmp_path))
    an_hour_ago = (time.time_ns() // 1000) - 3_600_000_000
    erasures.request("did:plc:aaa", an_hour_ago, keep_out=False)
    erasures.request("did:plc:bbb", an_hour_ago, keep_out=True)
    erasures.finish("did:plc:aaa", {"likes": 5, "posts": 2})
    samples = {s.name: s.value for f in seal_families(lake_state(tmp_path)) for s in f.samples}
    assert samples["skybuffer_lake_erasures_pending"] == 1
    assert samples["skybuffer_lake_forgotten_rows_total"] == 7
    assert 3_500 < samples["skybuffer_lake_oldest_erasure_age_seconds"] < 3_700
