"""Sealing, on a lake the real pipeline wrote (replay source through Redis and the
DataWriter, with upstream duplicates): a ready hour becomes one sorted file, each event
once, with a manifest; late events are folded in deduplicated; an hour that can still
receive events waits; a kill -9 at every step of a seal is finished or redone by the next
run; `lake verify` catches damage and gaps; `lake status` tells sealed from open.

Also covers: skybuffer.lake.manifest, skybuffer.lake.inventory, skybuffer.pipeline.sealing,
skybuffer.cli.lake."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES
from skybuffer.lake import schema as lake_schema
from skybuffer.lake.inventory import lake_hours, verify_lake
from skybuffer.lake.ledger import STATE_DIR
from skybuffer.lake.manifest import (
    MANIFEST,
    SEAL_STATS,
    VERIFY_STATS,
    read_figures,
    read_manifest,
)
from skybuffer.lake.schema import HOUR_US
from skybuffer.pipeline.faults import FAULT_EXIT_CODE, SEAL_STEPS
from skybuffer.pipeline.sealing import seal_ready
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate

from .lakes import (
    T0,
    buffer_and_drain,
    expected,
    lake_identities,
    queried_events,
    run_lake,
    two_hours,
)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_server: ManagedRedis) -> Settings:
    return make_settings()


def test_a_ready_hour_becomes_one_sorted_file_each_event_once_with_a_manifest(
    settings: Settings, tmp_path: Path
) -> None:
    lines = two_hours()
    buffer_and_drain(settings, tmp_path, lines, "first")
    report = seal_ready(settings)
    assert report.duplicates_dropped == 300 and report.waiting == 0
    hours = lake_hours(settings.lake)
    assert {h.state for h in hours} == {"sealed"}
    assert sum(h.rows for h in hours) == expected(lines)
    likes = next(h for h in hours if h.type == "likes")
    directory = next(Path(str(settings.lake.root), "likes").rglob(MANIFEST)).parent
    manifest = read_manifest(str(directory))
    assert manifest is not None and manifest.sealed and len(manifest.files) == 1 == likes.files
    assert manifest.rows == likes.rows == sum(manifest.rows_by_operation.values())
    assert manifest.time_us["min"] is not None and manifest.hour == likes.hour
    sealed = directory / manifest.files[0].name
    assert pq.read_schema(sealed).equals(lake_schema.schema("likes"), check_metadata=True)
    table = pq.read_table(sealed, columns=["did", "time_us"]).to_pylist()
    assert table == sorted(table, key=lambda r: (r["did"], r["time_us"]))
    assert sorted(p.name for p in directory.iterdir()) == sorted([MANIFEST, sealed.name])
    assert verify_lake(settings.lake).ok
    assert seal_ready(settings).sealed == []  # nothing left to do
    figures = read_figures(Path(str(settings.lake.root), STATE_DIR, SEAL_STATS))
    assert figures["hours_sealed_total"] == len(hours) and figures["runs_total"] == 2


def test_late_events_are_folded_into_their_sealed_hour_deduplicated(
    settings: Settings, tmp_path: Path
) -> None:
    lines = two_hours(duplicates=0)
    buffer_and_drain(settings, tmp_path, lines, "first")
    seal_ready(settings)
    late = generate(9, 1_000, T0 + 1_000) + lines[:200]  # new events, and old ones again
    buffer_and_drain(settings, tmp_path, late, "late")
    assert any(h.state == "late" for h in lake_hours(settings.lake))
    report = seal_ready(settings)
    assert report.late > 0 and report.duplicates_dropped == 200
    assert {h.state for h in lake_hours(settings.lake)} == {"sealed"}
    assert sum(h.rows for h in lake_hours(settings.lake)) == expected(lines + late)
    manifests = [
        read_manifest(str(p.parent)) for p in Path(str(settings.lake.root)).rglob(MANIFEST)
    ]
    assert any(m is not None and m.late_files == 1 and len(m.files) == 2 for m in manifests)
    assert verify_lake(settings.lake).ok


def test_an_hour_that_can_still_receive_events_is_not_sealed(
    settings: Settings, tmp_path: Path
) -> None:
    buffer_and_drain(settings, tmp_path, two_hours(), "first")
    latest_end = T0 + 2 * HOUR_US
    report = seal_ready(settings, watermark=latest_end + 60_000_000)  # 1 min past: in grace
    sealed_hours = {r.hour for r in report.sealed}
    assert report.waiting == 6 and sealed_hours == {"2026-05-25T14"}
    assert {h.state for h in lake_hours(settings.lake) if h.hour == "2026-05-25T15"} == {"open"}


@pytest.mark.parametrize("step", SEAL_STEPS)
def test_a_seal_killed_at_any_step_is_finished_by_the_next_without_loss_or_duplicate(
    settings: Settings, tmp_path: Path, step: str
) -> None:
    lines = two_hours()
    buffer_and_drain(settings, tmp_path, lines, "first")
    killed = run_lake(settings, "seal", SKYBUFFER_WRITER__FAULT=step)
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-2000:]
    # Mid-seal, a query reads each hour once: its inputs, or its sealed file (never both:
    # that would count an hour's thousands of rows twice), so only upstream copies differ.
    assert expected(lines) <= queried_events(settings) <= expected(lines) + 300
    done = run_lake(settings, "seal", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {h.state for h in lake_hours(settings.lake)} == {"sealed"}
    identities = lake_identities(settings)
    assert sum(identities.values()) == len(identities) == expected(lines)
    leftovers = [p.name for p in Path(str(settings.lake.root)).rglob(".tmp-seal-*")]
    assert leftovers == []
    verified = run_lake(settings, "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"]


def test_verify_catches_a_damaged_file_and_a_gap(settings: Settings, tmp_path: Path) -> None:
    lines = generate(3, 3_000, T0) + generate(5, 3_000, T0 + 2 * HOUR_US)  # hour 15 missing
    buffer_and_drain(settings, tmp_path, lines, "gap")
    seal_ready(settings)
    sealed = next(Path(str(settings.lake.root), "posts").rglob("sealed-*.parquet"))
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    sealed.write_bytes(bytes(data))
    done = run_lake(settings, "verify")
    assert done.returncode == 1
    assert "does not match its checksum" in done.stderr
    assert "2026-05-25T15: no data in this hour (a gap)" in done.stderr
    recorded = read_figures(Path(str(settings.lake.root), STATE_DIR, VERIFY_STATS))
    assert recorded["problems"] == 1 + len(TYPES)  # the damage, and the gap in every type
    status = run_lake(settings, "status", "--json")
    assert status.returncode == 0
    assert {h["state"] for h in json.loads(status.stdout)["hours"]} == {"sealed"}


def test_sealed_files_read_the_same_with_pyarrow_datasets(
    settings: Settings, tmp_path: Path
) -> None:
    lines = two_hours(duplicates=0)
    buffer_and_drain(settings, tmp_path, lines, "first")
    before = ds.dataset(
        str(Path(str(settings.lake.root), "likes")), partitioning="hive"
    ).count_rows()
    seal_ready(settings)
    after = ds.dataset(
        str(Path(str(settings.lake.root), "likes")), partitioning="hive"
    ).count_rows()
    assert before == after
