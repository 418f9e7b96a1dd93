"""`bench ingest|write --mode cluster`: standalone and a scratch cluster with each
partition count ingest and drain the same events, and the capacity figures follow from
the bytes per event; a bad --partitions is one line."""

from __future__ import annotations

import math
from collections.abc import Callable

from typer.testing import CliRunner

from skybuffer.cli import app
from skybuffer.ops.bench.scaling import FIREHOSE_EVENTS_PER_S, NODE_MAXMEMORY, bench_scaling
from skybuffer.settings import Settings


def test_scaling_bench_measures_standalone_and_each_partition_count(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    result = bench_scaling(3_000, settings, (1, 3))
    runs = result["runs"]
    assert [(r["topology"], r["partitions"]) for r in runs] == [
        ("standalone", 1),
        ("cluster", 1),
        ("cluster", 3),
    ]
    for run in runs:
        assert run["ingest_events_per_s"] > 0 and run["drain_events_per_s"] > 0
        assert 50 < run["bytes_per_event"] < 400
        per_hour = run["bytes_per_event"] * FIREHOSE_EVENTS_PER_S * 3600
        usable = NODE_MAXMEMORY * settings.ingest.high_water
        assert run["primaries_for_24h"] == math.ceil(24 * per_hour / usable)
        assert run["primaries_for_8h"] <= run["primaries_for_24h"]
    assert not list(settings.data_dir.glob("*"))  # scratch only: nothing in the data dir


def test_a_bad_partition_list_is_one_line(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    env = {"SKYBUFFER_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(
        app, ["bench", "ingest", "--mode", "cluster", "--partitions", "1,x"], env=env
    )
    assert result.exit_code == 2
    assert "comma list of counts" in result.output


def test_sentinel_mode_measures_ingest_without_and_with_wait_for_a_replica(
    make_settings: Callable[..., Settings],
) -> None:
    result = bench_scaling(3_000, make_settings(), mode="sentinel")
    rows = [(r["topology"], r["replica_acks"]) for r in result["runs"]]
    assert rows == [("standalone", 0), ("sentinel", 0), ("sentinel", 1)]
    assert all(r["drain_events_per_s"] > 0 for r in result["runs"])
