"""`skybuffer capacity` reads back every event it loaded, and cleans up after itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skybuffer.buffer.server import ManagedRedis
from skybuffer.cli import app
from skybuffer.errors import ConfigError
from skybuffer.ops.audit import PROFILES
from skybuffer.ops.capacity import plot_scale, run_capacity
from skybuffer.ops.harness import delete_keys
from skybuffer.ops.report import eight_hours, events_in
from skybuffer.settings import Settings


def test_capacity_reads_back_every_loaded_event_intact(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    report = run_capacity(make_settings(), events=30_000, show_progress=False)
    data = report.data
    assert data["events_loaded"] == data["events_read_back"] == 30_000
    assert data["integrity_percent"] == 100.0
    assert data["checksum_offered"] == data["checksum_read_back"]
    assert sum(data["by_type"].values()) == 30_000
    assert 0 < data["peak_percent_of_maxmemory"] < 100
    assert 0 < data["bytes_per_event"] < data["seed_bytes_per_event"]
    assert set(data["buffer_hours_at"]) == {"seed (2.7M / 8 h)", "mid-2026 steady",
                                            "2025 average"}  # fmt: skip
    assert report.exit_code == 0


def test_capacity_writes_report_and_plot_and_leaves_pipeline_keys_alone(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    admin = redis_server.client("admin")
    admin.xadd("skybuffer:stream:posts", {"v": "pipeline data"})
    report = run_capacity(make_settings(), events=10_000, show_progress=False)
    assert not list(admin.scan_iter(match="skybuffer:ops:*"))
    assert admin.xlen("skybuffer:stream:posts") == 1
    assert Path(report.paths["memory"]).read_bytes()[:4] == b"\x89PNG"
    assert "![memory]" in Path(report.paths["markdown"]).read_text()


def test_capacity_refuses_a_load_that_would_push_the_live_redis_into_backpressure(
    start_redis: Callable[..., ManagedRedis], make_settings: Callable[..., Settings]
) -> None:
    start_redis(maxmemory="8mb")
    with pytest.raises(ConfigError, match="fewer --events"):
        run_capacity(make_settings(), events=1_000_000, show_progress=False)


def test_capacity_command_prints_json_with_the_report_files(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    result = CliRunner().invoke(
        app, ["capacity", "--events", "5000", "--json", "--data-dir", str(settings.data_dir)],
        env={"SKYBUFFER_REDIS__PORT": str(settings.redis.port)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["integrity_percent"] == 100.0
    assert Path(out["report_files"]["json"]).exists()


def test_scratch_keys_are_deleted_by_their_prefix_only(redis_server: ManagedRedis) -> None:
    admin = redis_server.client("admin")
    admin.set("skybuffer:ops:capacity:cursor", "1")
    admin.set("skybuffer:ops:capacity:[x]*", "1")  # glob characters in a key name
    admin.set("skybuffer:ops:capacityX", "1")
    admin.set("skybuffer:cursor:jetstream", "1")
    assert delete_keys(admin, "skybuffer:ops:capacity:") == 2
    assert sorted(admin.scan_iter(match="skybuffer:*")) == [
        b"skybuffer:cursor:jetstream",
        b"skybuffer:ops:capacityX",
    ]


def test_the_report_is_titled_with_the_run_and_says_what_8_hours_are_as_the_audit_does(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    report = run_capacity(make_settings(), events=12_000, show_progress=False)
    data = report.data
    assert report.title == (
        f"skybuffer capacity: 12,000 events loaded in {data['load_seconds']:,.1f} s"
    )
    assert "8-hour" not in report.title
    assert data["events_8h"] == events_in() == PROFILES["default"].events_8h == 10_080_000
    markdown = Path(report.paths["markdown"]).read_text()
    assert f"| {eight_hours()} would take | {data['percent_for_8h']}% of maxmemory |" in markdown
    assert "research/" not in markdown  # cites files of the repository only
    assert "docs/JETSTREAM.md" in markdown
    assert (Path(__file__).parents[2] / "docs" / "JETSTREAM.md").read_text().count(
        "## Event rates"
    ) == 1


def test_the_plot_axis_fits_a_small_run_and_names_the_limits_off_its_scale(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    data = run_capacity(make_settings(), events=10_000, show_progress=False).data
    top, limits, note = plot_scale(data)
    peak_mb = data["peak_used_memory"] / 2**20
    assert peak_mb < top < data["maxmemory"] / 2**20 / 10  # 2 GB would squash the data
    assert limits == {}
    assert "maxmemory 2,048 MB" in note and "high-water" in note


def test_the_plot_draws_the_limits_when_they_are_in_range(
    start_redis: Callable[..., ManagedRedis], make_settings: Callable[..., Settings]
) -> None:
    start_redis(maxmemory="16mb")
    data = run_capacity(make_settings(), events=20_000, show_progress=False).data
    top, limits, note = plot_scale(data)
    assert set(limits) == {"maxmemory", "high-water"} and note == ""
    assert limits["maxmemory"] == 16 and top > 16
