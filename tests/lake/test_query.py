"""`skybuffer query`: a DuckDB view per type, results as JSON/CSV, and the lake's figures."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest

from skybuffer.constants import TYPES
from skybuffer.lake.query import QueryError, lake_figures, run_query, to_csv, to_json
from skybuffer.lake.schema import Rows
from skybuffer.lake.writer import LakeWriter
from skybuffer.settings import LakeSettings


@pytest.fixture
def filled(
    lake: LakeSettings, build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> LakeSettings:
    writer = LakeWriter(lake, "w1", 300)
    for type_ in ("posts", "likes", "other"):
        rows = build(type_, by_type[type_])
        staged = writer.stage(type_, rows.table["stream_id"][0].as_py())
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
