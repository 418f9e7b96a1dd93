"""`skybuffer bench redis` (ops/bench/redis.py) measures every operation and leaves the
live Redis as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from skybuffer.buffer.server import ManagedRedis
from skybuffer.cli import app
from skybuffer.ops.bench.redis import OPERATIONS, run_bench_redis
from skybuffer.settings import Settings


def test_bench_redis_measures_each_operation_alone_and_concurrently(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    report = run_bench_redis(make_settings(), ops=300, clients=3)
    rows = report.data["results"]
    assert [(r["operation"], r["clients"]) for r in rows] == [
        (op, n) for op in OPERATIONS for n in (1, 3)
    ]
    for row in rows:
        assert row["ops_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["met27"] in ("PASS", "FAIL")
    memory = report.data["memory"]
    assert 0 < memory["codec_bytes_per_event"] < memory["json_entry_bytes"]


def test_bench_redis_writes_its_report_and_removes_every_scratch_key(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    admin = redis_server.client("admin")
    admin.xadd("skybuffer:stream:likes", {"v": "pipeline data"})
    report = run_bench_redis(make_settings(), ops=200, clients=2)
    assert not list(admin.scan_iter(match="skybuffer:ops:*"))
    assert admin.xlen("skybuffer:stream:likes") == 1
    for kind in ("markdown", "json", "latency"):
        assert Path(report.paths[kind]).stat().st_size > 0
    assert "1,587" in Path(report.paths["markdown"]).read_text()


def test_every_ops_command_is_on_the_command_line() -> None:
    runner = CliRunner()
    for args in (["audit"], ["capacity"], ["bench", "redis"], ["chaos", "memory"],
                 ["chaos", "restart"], ["chaos", "sustained"]):  # fmt: skip
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "--data-dir" in result.output and "--json" in result.output
