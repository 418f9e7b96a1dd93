"""`skybuffer bench seal` on a tiny lake: two past hours written by twelve DataWriter runs
each, with upstream duplicates; sealing leaves one file per type and hour, drops every
duplicate, and the same DuckDB queries answer over both copies; nothing is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from typer.testing import CliRunner

from skybuffer.cli import app
from skybuffer.ops.bench.seal import QUERIES
from tests.conftest import running


def test_bench_seal_reports_the_lake_and_the_queries_before_and_after_sealing(
    tmp_path: Path, started_servers: list[psutil.Process]
) -> None:
    args = ["bench", "seal", "--hours", "2", "--events-per-hour", "2400", "--repeats", "1"]
    result = CliRunner().invoke(app, [*args, "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["events"] == figures["rows_after"] == 4_800
    assert figures["datawriter_runs"] == 24
    assert figures["duplicates_injected"] > 0
    assert figures["duplicates_dropped"] == figures["duplicates_injected"]
    assert figures["rows_before"] == figures["events"] + figures["duplicates_injected"]
    assert figures["files_per_type_hour_before"] > 5
    assert figures["files_per_type_hour_after"] == 1.0 and figures["partitions_sealed"] == 12
    assert figures["verify_ok"] is True
    assert set(figures["queries"]) == set(QUERIES)
    distinct = ("distinct_accounts_per_collection", "first_post_per_account")
    assert all(figures["queries"][name]["same_result"] for name in distinct)
    assert not figures["queries"]["events_by_collection"]["same_result"]  # the duplicates
    assert started_servers, "the bench started no scratch redis-server"
    assert not [p.pid for p in started_servers if running(p)], "a scratch server still runs"
    assert not list((tmp_path / "tmp").iterdir()), "the scratch directory was left behind"
