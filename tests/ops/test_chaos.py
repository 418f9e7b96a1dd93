"""Chaos experiments: a full Redis loses nothing under noeviction and whole streams under
allkeys-lru; a killed Redis recovers every acknowledged event (and a torn AOF tail loses
one whole transaction at most); steady load drains fully.

Covers on purpose: ops/chaos/memory.py, ops/chaos/restart.py, ops/chaos/sustained.py;
ops/chaos/forget.py is run by tests/e2e/test_operators.py (it needs the whole pipeline)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from skybuffer.buffer.server import ManagedRedis
from skybuffer.ops.chaos.memory import run_chaos_memory
from skybuffer.ops.chaos.restart import BATCH_EVENTS, run_chaos_restart
from skybuffer.ops.chaos.sustained import run_sustained
from skybuffer.settings import Settings

EVENTS = 72_000  # half as much again as 6 MB holds: both setups overflow it


def _files_written(paths: dict[str, str]) -> None:
    for path in paths.values():
        assert Path(path).stat().st_size > 0, path


def test_chaos_memory_loses_nothing_with_noeviction_and_whole_streams_with_allkeys_lru(
    make_settings: Callable[..., Settings],
) -> None:
    report = run_chaos_memory(
        make_settings(), events=EVENTS, maxmemory="6mb", ingest_rate=30_000, drain_rate=7_500
    )
    skybuffer, seed = report.data["runs"].values()
    assert (skybuffer["policy"], seed["policy"]) == ("noeviction", "allkeys-lru")
    assert skybuffer["accepted"] == skybuffer["readable"] == EVENTS
    assert skybuffer["lost"] == 0 and skybuffer["evicted_keys"] == 0
    assert skybuffer["backpressure_seconds"] > 0
    # Under allkeys-lru the cursor itself can be evicted: the ingester notices (the buffer
    # forgot) and rewinds; events are counted by identity, once each.
    assert seed["accepted"] == EVENTS and skybuffer["cursor_forgotten"] == 0
    assert seed["lost"] > 0 and seed["evicted_keys"] > 0
    assert report.exit_code == 0
    assert set(report.paths) == {"memory", "markdown", "json"}
    _files_written(report.paths)


def test_chaos_restart_recovers_every_acknowledged_event_after_sigkill(
    make_settings: Callable[..., Settings],
) -> None:
    report = run_chaos_restart(make_settings(), events=30_000, rate=15_000)
    modes = report.data["modes"]
    for mode in ("everysec", "always"):
        result = modes[mode]
        assert result["acknowledged"] >= 30_000
        assert result["recovered"] >= result["acknowledged"], mode
        assert result["lost"] == 0
        assert result["group_state_survived"], result["groups"]
        assert any(g["pending"] > 0 for groups in result["groups"].values() for g in groups)
    assert modes["always"]["host_crash"]["lost"] == 0
    crash = modes["everysec"]["host_crash"]
    assert crash["recovered"] + crash["lost"] == crash["acknowledged"]
    assert 0 < crash["recovered"]
    torn = modes["everysec"]["torn_tail"]  # the AOF's last bytes cut mid-transaction
    assert torn["refused_with_load_truncated_no"] and torn["loaded_truncated_warning"]
    assert 0 <= torn["dropped_events"] <= BATCH_EVENTS  # a whole transaction, never half
    assert report.exit_code == 0
    _files_written(report.paths)


def test_chaos_sustained_drains_everything_and_reports_every_window(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    report = run_sustained(
        make_settings(), minutes=0.1, rate=500, window_seconds=2, show_progress=False
    )
    data = report.data
    assert data["accepted"] > 0
    assert data["drained"] == data["accepted"] and data["lost"] == 0
    assert [w["window"] for w in data["windows"]] == [1, 2, 3]
    assert data["verdict"] in ("stable", "degraded")
    assert not list(redis_server.client("admin").scan_iter(match="skybuffer:ops:*"))
    assert set(report.paths) == {"sustained", "markdown", "json"}
    _files_written(report.paths)


def test_chaos_forget_from_the_command_line_reports_every_event_exactly_once(
    make_settings: Callable[..., Settings],
) -> None:
    import json

    from typer.testing import CliRunner

    from skybuffer.cli import app

    settings = make_settings()
    args = ["chaos", "forget", "--events", "8000", "--rate", "3000", "--source", "replay"]
    args += ["--data-dir", str(settings.data_dir), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    figures = report["results"]["replay"]
    for key in ("events", "lost", "duplicated", "replayed", "recovery_seconds"):
        assert key in figures
    assert figures["events"] == 8000 and figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["forgotten"] > 0 and report["ok"] is True
    _files_written({k: v for k, v in report["report_files"].items() if k != "png"})
