"""`skybuffer query`: a DuckDB view per type, results as JSON/CSV, and the lake's figures."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from skybuffer.constants import TYPES
from skybuffer.errors import QueryError
from skybuffer.lake.query import EMPTY_SQL, lake_figures, run_query, to_csv, to_json
from skybuffer.lake.schema import Rows
from skybuffer.lake.staging import StagedBatch
from skybuffer.lake.writer import LakeWriter
from skybuffer.settings import LakeSettings


@pytest.fixture
def filled(
    lake: LakeSettings, build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> LakeSettings:
    writer = LakeWriter(lake, "w1", 300)
    for type_ in ("posts", "likes", "other"):
        rows = build(type_, by_type[type_])
        staged = StagedBatch(writer, type_, rows.table["stream_id"][0].as_py())
        staged.append(rows.table, rows.hours)
        writer.publish(staged.finish(), set(rows.table["stream_id"].to_pylist()))
    return lake


def test_every_type_has_a_view_even_before_it_has_files(lake: LakeSettings) -> None:
    for type_ in TYPES:
        result = run_query(lake, f"SELECT count(*) AS n FROM {type_}")
        assert result.records() == [{"n": 0}]


def test_views_read_the_hive_partitions_as_integers(filled: LakeSettings) -> None:
    result = run_query(
        filled, "SELECT year, month, day, hour, count(*) AS n FROM likes GROUP BY ALL"
    )
    assert result.records() == [{"year": 2026, "month": 5, "day": 25, "hour": 14, "n": 1}]


def test_results_print_as_a_json_array_of_row_objects(filled: LakeSettings) -> None:
    result = run_query(filled, "SELECT did, langs, event_time FROM posts")
    [row] = json.loads(to_json(result))
    assert row == {
        "did": "did:plc:q235v55g5unth4zjjdpacfdr",
        "langs": ["en"],
        "event_time": "2026-05-25T14:23:29.157119+00:00",
    }


def test_results_print_as_csv_with_a_header(filled: LakeSettings) -> None:
    result = run_query(filled, "SELECT kind, relay_seq FROM other ORDER BY relay_seq NULLS LAST")
    rows = list(csv.reader(io.StringIO(to_csv(result))))
    assert rows[0] == ["kind", "relay_seq"]
    assert rows[1] == ["identity", "30340180350"]


def test_a_failing_query_says_why(filled: LakeSettings) -> None:
    with pytest.raises(QueryError, match="nope"):
        run_query(filled, "SELECT * FROM nope")


def test_lake_figures_count_files_rows_bytes_and_the_newest_partition(
    filled: LakeSettings,
) -> None:
    figures = lake_figures(filled)
    assert (figures["posts"].files, figures["posts"].rows) == (1, 1)
    assert figures["other"].rows == 5 and figures["other"].bytes > 0
    assert figures["likes"].newest_partition == "likes/year=2026/month=05/day=25/hour=14"
    assert figures["likes"].newest_hour == "2026-05-25T14"
    assert figures["blocks"].files == 0 and figures["blocks"].newest_partition is None


# --- the command line: what a person sees ----------------------------------------------------
def query_cli(lake: LakeSettings, sql: str, columns: int) -> subprocess.CompletedProcess[str]:
    """`skybuffer query` in a child process with a fixed terminal width (COLUMNS)."""
    env = {**os.environ, "COLUMNS": str(columns), "SKYBUFFER_LAKE__ROOT": str(lake.root)}
    data_dir = Path(str(lake.root)).parent / "data"
    command = [sys.executable, "-m", "skybuffer", "query", "--data-dir", str(data_dir), "--", sql]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("sql", ["", "   ", "-- nothing\n;", "/* a comment */"])
def test_empty_sql_is_one_line_naming_the_fix_and_a_non_zero_exit(
    lake: LakeSettings, sql: str
) -> None:
    done = query_cli(lake, sql, 200)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"error: {EMPTY_SQL}"], done.stderr
    assert done.stdout == ""


def test_rows_too_wide_for_the_terminal_are_shown_one_block_per_row(
    filled: LakeSettings,
) -> None:
    width = 200
    done = query_cli(filled, "select l.* from likes l, range(3)", width)  # 1 like, 3 times
    assert done.returncode == 0, done.stderr
    columns = run_query(filled, "select * from likes limit 1").columns
    lines = done.stdout.splitlines()
    assert len(columns) > 20
    assert max(len(line) for line in lines) <= width
    assert sum(1 for line in lines if re.match(r"^─* ?row \d", line)) == 3
    for name in columns:  # every column's name, whole, starts a line once per row
        assert sum(1 for line in lines if line.split(" ", 1)[0] == name) == 3, name
    assert "--json or --csv" in lines[-1] and lines[-1].startswith("3 rows")


def test_rows_that_fit_stay_a_table(filled: LakeSettings) -> None:
    done = query_cli(filled, "select year, month, count(*) as n from likes group by all", 80)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if "year" in line)
    assert "month" in header and "n" in header  # one header line: a table
    assert "--json" not in done.stdout
