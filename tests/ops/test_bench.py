"""`skybuffer bench ingest|codec|write` run end to end on scratch servers and leave nothing.

Also covers: skybuffer.ops.bench.ingest, skybuffer.ops.bench.codec,
skybuffer.ops.bench.jetstream (``bench ingest --source jetstream``), skybuffer.ops.bench.write,
skybuffer.ops.bench.reference (through the behaviour above); ops/bench/redis.py has
tests/ops/test_bench_redis.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from typer.testing import CliRunner

from skybuffer.cli import app
from skybuffer.settings import IngestSettings
from tests.conftest import GOLDEN, running

KEYS = ("events_per_s", "baseline_events_per_s", "redis_limit_events_per_s",
        "bytes_per_event", "json_bytes_per_event")  # fmt: skip


def test_bench_ingest_reports_every_figure_beside_its_baselines(
    tmp_path: Path, started_servers: list[psutil.Process]
) -> None:
    result = CliRunner().invoke(
        app, ["bench", "ingest", "--events", "20000", "--json", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert all(figures[key] > 0 for key in KEYS)
    assert figures["events"] == 20_000
    assert figures["bytes_per_event"] < figures["json_bytes_per_event"] / 2
    assert started_servers, "the bench started no scratch redis-server"
    assert not [p.pid for p in started_servers if running(p)], "a scratch server still runs"
    assert not list((tmp_path / "tmp").iterdir()), "the scratch directory was left behind"


def test_bench_codec_measures_a_file_at_the_shipped_level_against_plain_json(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        app, ["bench", "codec", "--file", str(GOLDEN), "--json", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["events"] == len(GOLDEN.read_bytes().splitlines())
    assert figures["bytes_per_event"] > 0 and figures["json_bytes_per_event"] > 0
    assert figures["codec_level"] == IngestSettings().codec_level


def test_bench_ingest_from_jetstream_confirms_every_event_from_a_local_websocket(
    tmp_path: Path, started_servers: list[psutil.Process]
) -> None:
    """The real Jetstream source reads a local replay server (its own process) until
    Redis confirmed the events asked for; both servers are gone afterwards."""
    args = ["bench", "ingest", "--source", "jetstream", "--events", "3000", "--json"]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["source"] == "jetstream"
    assert figures["events"] == 3000
    assert figures["events_per_s"] > 0 and figures["wire_bytes_per_event"] > 0
    assert figures["position_bytes"] > 0, "no position was confirmed with the events"
    assert started_servers, "the bench started no scratch redis-server"
    assert not [p.pid for p in started_servers if running(p)], "a scratch server still runs"
    assert not list((tmp_path / "tmp").iterdir()), "the scratch directory was left behind"


def test_bench_write_reports_the_drain_beside_its_in_run_reference(
    tmp_path: Path, started_servers: list[psutil.Process]
) -> None:
    """The reference converts the very events the writer drains (same count), in another
    process: the writer's figures and the ratio are all reported, and nothing is left."""
    result = CliRunner().invoke(
        app, ["bench", "write", "--events", "20000", "--json", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["rows"] == figures["reference_events"] == 20_000
    for key in (
        "events_per_s",
        "reference_events_per_s",
        "writer_peak_rss_bytes",
        "reference_peak_rss_bytes",
        "vs_reference",
    ):
        assert figures[key] > 0, key
    assert figures["vs_reference"] == round(
        figures["events_per_s"] / figures["reference_events_per_s"], 2
    )
    assert started_servers, "the bench started no scratch redis-server"
    assert not [p.pid for p in started_servers if running(p)], "a scratch server still runs"
    assert not list((tmp_path / "tmp").iterdir()), "the scratch directory was left behind"
