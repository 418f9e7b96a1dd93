"""`skybuffer bench ingest|codec` run end to end on scratch servers and leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from typer.testing import CliRunner

from skybuffer.cli import app
from tests.conftest import GOLDEN

KEYS = ("events_per_s", "baseline_events_per_s", "redis_limit_events_per_s",
        "bytes_per_event", "json_bytes_per_event")  # fmt: skip


def _redis_servers() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server"}


def test_bench_ingest_reports_every_figure_beside_its_baselines(tmp_path: Path) -> None:
    before = _redis_servers()
    result = CliRunner().invoke(
        app, ["bench", "ingest", "--events", "20000", "--json", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert all(figures[key] > 0 for key in KEYS)
    assert figures["events"] == 20_000
    assert figures["bytes_per_event"] < figures["json_bytes_per_event"] / 2
    assert _redis_servers() <= before, "the scratch redis-server was left running"


def test_bench_codec_measures_a_file_against_plain_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["bench", "codec", "--file", str(GOLDEN), "--json", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["events"] == len(GOLDEN.read_bytes().splitlines())
    assert figures["bytes_per_event"] > 0 and figures["json_bytes_per_event"] > 0
