"""`chaos failover --mode sentinel`: the primary is SIGKILLed while ingest (through the
local Jetstream-protocol server) and the DataWriter run; a replica is promoted, both
reconnect by themselves, and the lake holds every event exactly once (by identity).
`--mode cluster`: the primary of one partition's slot is SIGKILLed under the partitioned
pipeline (a lane and a DataWriter per partition); the cluster promotes its replica (one
that lagged, with --replica-lag), that partition's lane lands batches again (rewinding its
source for what the replica lacked), and the lake holds every event exactly once.

Also covers: skybuffer.ops.chaos.failover_cluster."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from skybuffer.cli import app
from skybuffer.ops.chaos.failover import failover_once
from skybuffer.settings import Settings


def test_primary_killed_mid_run_a_replica_takes_over_and_every_event_lands_once(
    make_settings: Callable[..., Settings],
) -> None:
    result = failover_once(make_settings(), "jetstream", events=12_000, rate=3_000)
    assert result["failovers"] == 1 and result["new_primary"] != result["old_primary"]
    assert result["lake_rows"] == 12_000
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert 0 < result["promotion_seconds"] <= result["recovery_seconds"]


def test_a_cluster_primary_killed_after_its_replica_lagged_rewinds_that_lane_and_loses_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    """The replica is cut off a second before the kill: the promoted replica lacks what
    the victim's lane had confirmed since; the lane rewinds its own source."""
    result = failover_once(make_settings(), "jetstream", 20_000, 2_000, "cluster", replica_lag=1)
    assert result["partition"] == "p1" and result["killed_node"].startswith("cluster-")
    assert result["failovers"] >= 1 and result["new_primary"] != result["old_primary"]
    assert result["forgotten"] > 0 and result["rewinds"] >= 1
    assert result["lake_rows"] == 20_000
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert 0 < result["promotion_seconds"] <= result["recovery_seconds"]


@pytest.mark.parametrize("mode", ["sentinel", "cluster"])
def test_chaos_failover_from_the_command_line_reports_table_and_json(
    mode: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    args = ["chaos", "failover", "--mode", mode, "--events", "6000", "--rate", "3000"]
    args += ["--source", "replay", "--data-dir", str(settings.data_dir), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    figures = report["results"]
    for key in ("events", "lost", "duplicated", "failovers", "recovery_seconds"):
        assert key in figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and report["ok"] is True
    if mode == "cluster":
        assert {"partition", "killed_node", "promotion_seconds"} <= set(figures)
    refused = CliRunner().invoke(app, ["chaos", "failover", "--mode", "standalone"])
    assert refused.exit_code == 2 and "sentinel, cluster" in refused.output
    lagged = ["chaos", "failover", "--mode", "sentinel", "--replica-lag", "1"]
    refused = CliRunner().invoke(app, lagged)
    assert refused.exit_code == 2 and "--mode cluster only" in refused.output
