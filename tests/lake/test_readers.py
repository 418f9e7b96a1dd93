"""Every reader sees the same lake: DuckDB, Polars and pyarrow.dataset read what the real
pipeline wrote (synthetic events through the ingester and three DataWriter runs, over
hours of two months, half of them sealed with a late file each, half open with several
files) and get the same rows with the same types.

The hive partition columns are where readers differ unless pinned: DuckDB guesses from
the values (zero-padded ``05`` stays text), Polars reads int64, pyarrow int32; pinned
(``hive_types``, ``hive_schema``, an explicit partitioning schema) all read int32.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES
from skybuffer.datadir import free_port
from skybuffer.events import classify
from skybuffer.lake.layout import TIME_FIELDS
from skybuffer.lake.schema import schema
from skybuffer.pipeline.datawriter import drain_once
from skybuffer.pipeline.runner import build_ingester
from skybuffer.pipeline.sealing import seal_ready
from skybuffer.settings import Settings, load_settings
from skybuffer.testbed.generator import generate
from tests.conftest import stop_pid

HOUR = 3_600_000_000
START = 1_780_257_600_000_000  # 2026-05-31T20:00:00Z: the hours run into June
HOURS, EVENTS = 8, 6_000
SEAL_MAY = START + 5 * HOUR  # the four May hours are past their end and grace, June's not
IDENTITY = ["stream_id", "stream_index", "did", "time_us", *TIME_FIELDS]
Reader = Callable[[str, str, bool], pa.Table]

PINNED_DUCKDB = "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"
PINNED_POLARS = dict.fromkeys(TIME_FIELDS, pl.Int32)
PINNED_PYARROW = ds.partitioning(pa.schema([(f, pa.int32()) for f in TIME_FIELDS]), flavor="hive")


def duckdb_reader(root: str, type_: str, pinned: bool = False) -> pa.Table:
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")  # else TIMESTAMPTZ columns carry the session zone
    types = f", hive_types = {PINNED_DUCKDB}" if pinned else ""
    files = f"'{root}/{type_}/**/*.parquet'"
    sql = f"SELECT * FROM read_parquet({files}, hive_partitioning = true{types})"
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def polars_reader(root: str, type_: str, pinned: bool = False) -> pa.Table:
    frame = pl.scan_parquet(
        f"{root}/{type_}/**/*.parquet",
        hive_partitioning=True,
        hive_schema=PINNED_POLARS if pinned else None,
    )
    return frame.collect().to_arrow()


def pyarrow_reader(root: str, type_: str, pinned: bool = False) -> pa.Table:
    partitioning = PINNED_PYARROW if pinned else "hive"
    return ds.dataset(f"{root}/{type_}", format="parquet", partitioning=partitioning).to_table()


READERS: dict[str, Reader] = {
    "duckdb": duckdb_reader,
    "polars": polars_reader,
    "pyarrow": pyarrow_reader,
}


def logical(type_: pa.DataType) -> pa.DataType:
    """The type as a reader-neutral value: large and view strings are strings, large lists
    are lists (item name dropped), UTC under any name is UTC."""
    if pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return pa.string()
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return pa.list_(logical(type_.value_type))
    if pa.types.is_timestamp(type_) and type_.tz in ("UTC", "Etc/UTC"):
        return pa.timestamp(type_.unit, tz="UTC")
    return type_


def neutral(table: pa.Table, type_: str) -> pa.Table:
    """Columns by name, in the lake schema's order, each as its logical type and the hive
    columns as int32 (whatever the reader guessed: their values are compared, their types
    by the test of types); rows in stream order."""
    names = [*schema(type_).names, *TIME_FIELDS]
    table = table.select(names)
    target = pa.schema(
        [pa.field(n, logical(table.schema.field(n).type)) for n in schema(type_).names]
        + [pa.field(n, pa.int32()) for n in TIME_FIELDS]
    )
    return table.cast(target).sort_by([("stream_id", "ascending"), ("stream_index", "ascending")])


@pytest.fixture(scope="module")
def pipeline_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Counter[str]]:
    """A lake the pipeline wrote, and how many events of each type it must hold: three
    DataWriter runs, the May hours sealed after the second (so they hold a sealed file, a
    late file and ``_manifest.json``), the June hours open with three files each."""
    tmp = tmp_path_factory.mktemp("readers")
    settings: Settings = load_settings(
        data_dir=tmp / "var",
        redis={"port": free_port()},
        metrics={"ingest_port": 0, "writer_port": 0},
    )
    events = spread(generate(7, EVENTS, START))
    third = EVENTS // 3
    server = ManagedRedis(settings.redis, settings.redis_dir)
    server.start()
    try:
        replay = tmp / "events.jsonl"
        for run, part in enumerate((events[:third], events[third:-third], events[-third:])):
            with replay.open("ab") as out:
                out.write(b"".join(line + b"\n" for line in part))
            build_ingester(settings, "replay", file=replay).run()
            assert drain_once(settings).ok
            if run == 1:
                assert seal_ready(settings, watermark=SEAL_MAY).sealed
    finally:
        pid = server.pid()
        server.stop(timeout=10)
        stop_pid(pid)
    assert settings.lake.root is not None
    return settings.lake.root, Counter(classify(e, 1_000_000) for e in events)


def spread(lines: list[bytes]) -> list[bytes]:
    """The events with their time_us spread round-robin over HOURS consecutive hours."""
    out = []
    for i, line in enumerate(lines):
        event = orjson.loads(line)
        event["time_us"] = START + (i % HOURS) * HOUR + i
        out.append(orjson.dumps(event))
    return out


@pytest.mark.parametrize("pinned", [False, True], ids=["guessed", "pinned"])
@pytest.mark.parametrize("type_", TYPES)
def test_every_reader_gets_the_same_rows(
    pipeline_lake: tuple[str, Counter[str]], type_: str, pinned: bool
) -> None:
    root, expected = pipeline_lake
    tables = {n: neutral(read(root, type_, pinned), type_) for n, read in READERS.items()}
    identities = {
        name: Counter(zip(*(t[c].to_pylist() for c in IDENTITY), strict=True))
        for name, t in tables.items()
    }
    assert {n: t.num_rows for n, t in tables.items()} == dict.fromkeys(READERS, expected[type_])
    assert identities["polars"] == identities["duckdb"] == identities["pyarrow"]
    assert max(identities["duckdb"].values()) == 1
    assert tables["polars"].equals(tables["duckdb"]) and tables["pyarrow"].equals(tables["duckdb"])


def test_the_lake_holds_sealed_and_open_hours_across_a_month_boundary(
    pipeline_lake: tuple[str, Counter[str]],
) -> None:
    root, _ = pipeline_lake
    hours = sorted(p for p in Path(root, "likes").glob("*/*/*/*") if p.is_dir())
    names = {
        p.parent.parent.name + "/" + p.name: sorted(f.name for f in p.iterdir()) for p in hours
    }
    may = [n for h, n in names.items() if h.startswith("month=05")]
    june = [n for h, n in names.items() if h.startswith("month=06")]
    assert len(may) == len(june) == HOURS // 2
    for files in may:  # the sealed file, the late one, the manifest
        assert len(files) == 3 and "_manifest.json" in files
        assert sum(f.startswith("sealed-") for f in files) == 1
    assert all(len(files) == 3 and all(f.startswith("part-") for f in files) for files in june)


@pytest.mark.parametrize("type_", TYPES)
def test_every_reader_gets_the_lake_schema_types(
    pipeline_lake: tuple[str, Counter[str]], type_: str
) -> None:
    root, _ = pipeline_lake
    want = [(f.name, logical(f.type)) for f in schema(type_)]
    for name, read in READERS.items():
        got = read(root, type_).schema
        columns = [(n, logical(got.field(n).type)) for n in got.names if n not in TIME_FIELDS]
        assert columns == want, name


def test_unpinned_hive_columns_differ_between_readers_and_pinned_ones_agree(
    pipeline_lake: tuple[str, Counter[str]],
) -> None:
    root, _ = pipeline_lake

    def hive_types(read: Reader, pinned: bool = False) -> dict[str, pa.DataType]:
        got = read(root, "posts", pinned).schema
        return {f: got.field(f).type for f in TIME_FIELDS}

    # DuckDB guesses per column from the values: 2026 is a number, 05 and 31 keep their
    # text (a leading zero), so the same lake reads differently as it grows.
    assert hive_types(duckdb_reader) == {
        "year": pa.int64(),
        "month": pa.string(),
        "day": pa.string(),
        "hour": pa.string(),
    }
    assert hive_types(polars_reader) == dict.fromkeys(TIME_FIELDS, pa.int64())
    assert hive_types(pyarrow_reader) == dict.fromkeys(TIME_FIELDS, pa.int32())
    for read in READERS.values():
        assert hive_types(read, True) == dict.fromkeys(TIME_FIELDS, pa.int32())
