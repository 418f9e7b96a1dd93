"""Lake files are atomic, named from the entries they hold, and replace unfinished attempts.

Also covers: skybuffer.lake.layout, skybuffer.lake.staging (through the behaviour
above).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from skybuffer.errors import ConfigError, LakeWriteError
from skybuffer.lake.layout import ENTRIES_KEY, Layout
from skybuffer.lake.schema import Rows
from skybuffer.lake.staging import StagedBatch
from skybuffer.lake.writer import LakeWriter, WrittenFile
from skybuffer.settings import LakeSettings

HOUR = 3_600_000_000
T0 = 1_779_717_600_000_000  # 2026-05-25T14:00:00Z


def likes(golden_like: bytes, times: list[int]) -> list[bytes]:
    """Copies of one like at the given time_us (distinct rkeys)."""
    event = orjson.loads(golden_like)
    out = []
    for i, t in enumerate(times):
        event["time_us"], event["commit"]["rkey"] = t, f"rkey{i}"
        out.append(orjson.dumps(event))
    return out


def write(writer: LakeWriter, rows: Rows, publish: bool = True) -> list[WrittenFile]:
    staged = StagedBatch(writer, "likes", rows.table["stream_id"][0].as_py())
    staged.append(rows.table, rows.hours)
    parts = staged.finish()
    ids = set(rows.table["stream_id"].to_pylist())
    return writer.publish(parts, ids) if publish else []


def lake_rows(lake: LakeSettings) -> list[tuple[str, int]]:
    glob = Layout(str(lake.root), lake.path_template).glob("likes")
    return sorted(
        duckdb.sql(f"SELECT stream_id, stream_index FROM read_parquet('{glob}')").fetchall()
    )


@pytest.fixture
def like(by_type: dict[str, list[bytes]]) -> bytes:
    return by_type["likes"][0]


def test_partitions_follow_the_template_in_utc_and_the_seed_order_is_one_setting() -> None:
    hour = T0 // HOUR
    default = Layout("/lake", LakeSettings().path_template)
    assert default.partition("likes", hour) == "likes/year=2026/month=05/day=25/hour=14"
    assert default.glob("likes") == "/lake/likes/year=*/month=*/day=*/hour=*/*.parquet"
    seed = Layout("/lake", "year={year}/month={month}/day={day}/hour={hour}/type={type}")
    assert seed.partition("posts", hour) == "year=2026/month=05/day=25/hour=14/type=posts"
    match = seed.matcher("posts").match("year=2026/month=05/day=25/hour=14/type=posts/x.parquet")
    assert match is not None and match["hour"] == "14"


def test_a_template_without_every_placeholder_is_refused() -> None:
    with pytest.raises(ConfigError, match="placeholders"):
        Layout("/lake", "{type}/year={year}/day={day}")


def test_staged_files_are_invisible_to_readers_until_published(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    writer = LakeWriter(lake, "w1", 300)
    rows = build("likes", likes(like, [T0, T0 + 1]))
    staged = StagedBatch(writer, "likes", "1000-0")
    staged.append(rows.table, rows.hours)
    [part] = staged.finish()
    temp = Path(part.temp)
    assert temp.name.startswith(".tmp-w1.") and temp.name.endswith(".inprogress")
    assert temp.exists() and lake_rows_or_none(lake) is None
    assert ds.dataset(str(lake.root), format="parquet").count_rows() == 0
    writer.publish([part], {"1000-0", "1001-0"})
    assert not temp.exists() and len(lake_rows(lake)) == 2


def lake_rows_or_none(lake: LakeSettings) -> list[tuple[str, int]] | None:
    try:
        return lake_rows(lake)
    except duckdb.IOException:  # no file matches the glob
        return None


def test_one_file_per_hour_named_from_the_entries_it_holds(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    times = [T0, T0 + HOUR, T0 + 1, T0 + 2 * HOUR, T0 + HOUR + 5]
    files = write(LakeWriter(lake, "w1", 300), build("likes", likes(like, times)))
    names = {f.partition.split("/")[-1]: Path(f.path).name for f in files}
    assert names == {
        "hour=14": "part-1000_0-1002_0.parquet",
        "hour=15": "part-1001_0-1004_0.parquet",
        "hour=16": "part-1003_0-1003_0.parquet",
    }
    footer = pq.read_metadata(files[1].path).metadata
    assert footer[ENTRIES_KEY] == b"1001-0,1004-0"


def test_a_rerun_with_other_batches_replaces_the_unacknowledged_attempt(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    lines = likes(like, [T0 + i for i in range(6)])
    writer = LakeWriter(lake, "w1", 300)
    write(writer, build("likes", lines))  # attempt 1: entries 1000..1005, never committed
    write(writer, build("likes", lines[:4]))  # the rerun takes 1000..1003 only
    assert lake_rows(lake) == [(f"{1000 + i}-0", 0) for i in range(4)]
    write(writer, build("likes", lines[4:], first_ms=1004))  # then the rest
    assert lake_rows(lake) == [(f"{1000 + i}-0", 0) for i in range(6)]


def test_files_of_other_entries_within_the_id_range_are_kept(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    lines = likes(like, [T0, T0 + 1, T0 + 2, T0 + 3])
    writer = LakeWriter(lake, "w1", 300)
    outer = build("likes", [lines[0], lines[3]])  # entries 1000-0 and 1003-0
    outer.table = outer.table.set_column(0, "stream_id", pa.array(["1000-0", "1003-0"]))
    write(writer, outer)
    inner = build("likes", lines[1:3], first_ms=1001)  # 1001-0, 1002-0: inside 1000..1003
    write(LakeWriter(lake, "w2", 300), inner)
    assert [i for i, _ in lake_rows(lake)] == ["1000-0", "1001-0", "1002-0", "1003-0"]


def test_leftovers_of_a_killed_writer_are_removed_and_a_live_writers_are_not(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    directory = Path(str(lake.root)) / "likes/year=2026/month=05/day=25/hour=14"
    directory.mkdir(parents=True)
    own = directory / ".tmp-w1.999_0-492143.inprogress"
    stale = directory / ".tmp-w9.998_0-492143.inprogress"
    live = directory / ".tmp-w8.997_0-492143.inprogress"
    for path in (own, stale, live):
        path.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 600, time.time() - 600))
    write(LakeWriter(lake, "w1", 300), build("likes", likes(like, [T0])))
    assert not own.exists() and not stale.exists() and live.exists()


def test_a_partition_that_cannot_be_created_fails_naming_the_path_and_cause(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    blocker = Path(str(lake.root)) / "likes" / "year=2026"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the year directory should be")  # fails even for root
    with pytest.raises(LakeWriteError) as failure:
        write(LakeWriter(lake, "w1", 300), build("likes", likes(like, [T0])))
    message = str(failure.value)
    assert "likes/year=2026/month=05/day=25/hour=14" in message
    assert f"{blocker} exists and is not a directory" in message
    assert "nothing of this batch was acknowledged" in message
    assert list(Path(str(lake.root)).rglob(".tmp-*")) == []


def test_files_are_zstd_with_dictionaries_statistics_and_large_row_groups(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    settings = LakeSettings(root=lake.root, row_group_rows=3)
    lines = likes(like, [T0 + i for i in range(7)])
    [written] = write(LakeWriter(settings, "w1", 300), build("likes", lines))
    meta = pq.read_metadata(written.path)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 3, 1]
    columns = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
    stream_id = meta.row_group(0).column(columns["stream_id"])
    assert stream_id.compression == "ZSTD"
    assert "RLE_DICTIONARY" in stream_id.encodings
    assert meta.row_group(0).column(columns["did"]).statistics.has_min_max
    assert "RLE_DICTIONARY" not in meta.row_group(0).column(columns["record_json"]).encodings


def _row_groups(path: str) -> list[int]:
    meta = pq.read_metadata(path)
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def test_rows_appended_in_small_chunks_are_held_until_they_make_a_full_row_group(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    """Chunks (DuckDB queries) are smaller than row groups: readers still get row groups
    of ``lake.row_group_rows`` rows, every row once, in order."""
    settings = LakeSettings(root=lake.root, row_group_rows=4)
    writer = LakeWriter(settings, "w1", 300)
    staged = StagedBatch(writer, "likes", "1000-0")
    lines = likes(like, [T0 + i for i in range(11)])
    for i in range(0, 11, 2):
        rows = build("likes", lines[i : i + 2], first_ms=1000 + i)
        staged.append(rows.table, rows.hours)
    [part] = staged.finish()
    [written] = writer.publish([part], set(part.entry_ids))
    assert _row_groups(written.path) == [4, 4, 3]
    table = pq.read_table(written.path)
    assert table["time_us"].to_pylist() == [T0 + i for i in range(11)]


def test_rows_held_for_a_row_group_are_bounded_in_bytes_whatever_their_size(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    """``lake.row_group_bytes`` bounds the Arrow memory held per partition: a partition
    whose rows reach it is written as a row group of the rows that fit, every row once."""
    lines = likes(like, [T0 + i for i in range(12)])
    per_row = build("likes", lines).table.nbytes / 12
    settings = LakeSettings(root=lake.root, row_group_rows=1000, row_group_bytes=int(3.5 * per_row))
    writer = LakeWriter(settings, "w1", 300)
    staged = StagedBatch(writer, "likes", "1000-0")
    for i in range(0, 12, 2):
        rows = build("likes", lines[i : i + 2], first_ms=1000 + i)
        staged.append(rows.table, rows.hours)
        assert sum(staged._held_bytes.values()) < settings.row_group_bytes
    [part] = staged.finish()
    [written] = writer.publish([part], set(part.entry_ids))
    assert max(_row_groups(written.path)) <= 3 and sum(_row_groups(written.path)) == 12
    assert pq.read_table(written.path)["time_us"].to_pylist() == [T0 + i for i in range(12)]


def test_rows_held_across_partitions_never_exceed_one_row_group(
    lake: LakeSettings, build: Callable[..., Rows], like: bytes
) -> None:
    """A batch spanning hours holds at most a row group's worth of rows in all: past it,
    the partition holding the most is written as a shorter row group."""
    settings = LakeSettings(root=lake.root, row_group_rows=4)
    writer = LakeWriter(settings, "w1", 300)
    staged = StagedBatch(writer, "likes", "1000-0")
    for i in range(5):  # one row in hour 0 and one in hour 1 per chunk
        times = [T0 + i, T0 + HOUR + i]
        rows = build("likes", likes(like, times), first_ms=1000 + 2 * i)
        staged.append(rows.table, rows.hours)
        assert sum(staged._held_rows.values()) <= 4
    parts = staged.finish()
    written = writer.publish(parts, {i for p in parts for i in p.entry_ids})
    # 3 + 3 held after the third chunk: hour 0 (the first of the largest) is written short;
    # hour 1 fills its group of 4 at the fourth; the rest is written by finish.
    assert [_row_groups(w.path) for w in written] == [[3, 2], [4, 1]]
    assert [pq.read_table(w.path)["time_us"].to_pylist() for w in written] == [
        [T0 + i for i in range(5)],
        [T0 + HOUR + i for i in range(5)],
    ]
