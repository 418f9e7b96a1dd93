"""The DataWriter's conversion (msgspec) gives DuckDB's rows, line for line, without DuckDB.

Also covers: skybuffer.lake.extraction (the DuckDB reference each test compares with),
skybuffer.lake.created_at, skybuffer.lake.shapes, skybuffer.lake.normal_form
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import orjson
import pyarrow as pa
import pytest

from skybuffer.events import classify
from skybuffer.lake.extraction import SqlRowBuilder
from skybuffer.lake.rows import RowBuilder, conversion_errors
from skybuffer.lake.schema import Rows
from skybuffer.testbed.generator import generate

T0 = 1_779_719_009_000_000  # 2026-05-25T14:23:29Z


@pytest.fixture
def both() -> Iterator[tuple[RowBuilder, SqlRowBuilder]]:
    fast, sql = RowBuilder(), SqlRowBuilder()
    yield fast, sql
    fast.close()
    sql.close()


def entries(lines: list[bytes], per_entry: int) -> tuple[list[str], list[bytes]]:
    chunks = [lines[i : i + per_entry] for i in range(0, len(lines), per_entry)]
    return [f"{1000 + i}-0" for i in range(len(chunks))], [b"\n".join(c) for c in chunks]


def assert_same(fast: Rows, sql: Rows) -> None:
    assert fast.table.schema == sql.table.schema
    for name in fast.table.schema.names:
        mine, duck = fast.table[name], sql.table[name]
        if pa.types.is_timestamp(mine.type):  # years outside Python's datetime: compare µs
            mine, duck = mine.cast(pa.int64()), duck.cast(pa.int64())
        assert mine.to_pylist() == duck.to_pylist(), name
    assert fast.table.equals(sql.table)
    assert fast.hours.to_pylist() == sql.hours.to_pylist()
    assert fast.rejects == sql.rejects


def by_type(lines: list[bytes]) -> dict[str, list[bytes]]:
    grouped: dict[str, list[bytes]] = {}
    for line in lines:
        grouped.setdefault(classify(line, 1_000_000), []).append(line)
    return grouped


def test_golden_and_synthetic_events_give_duckdbs_rows_without_duckdb(
    both: tuple[RowBuilder, SqlRowBuilder], golden_lines: list[bytes]
) -> None:
    """Every type, real Jetstream events and 30k synthetic ones (their odd createdAt
    values included): the same table, hour buckets and rejects, none left to DuckDB."""
    fast, sql = both
    for type_, lines in by_type(golden_lines + generate(11, 30_000, T0)).items():
        ids, payloads = entries(lines, 40)
        assert_same(fast.build(type_, ids, payloads), sql.build(type_, ids, payloads))
    assert fast.fallback_lines == 0 and fast._sql is None


def _like(**changes: object) -> bytes:
    event: dict = {
        "did": "did:plc:a",
        "time_us": T0,
        "kind": "commit",
        "commit": {
            "rev": "r",
            "operation": "create",
            "collection": "app.bsky.feed.like",
            "rkey": "k",
            "record": {"$type": "app.bsky.feed.like", "createdAt": "2026-05-25T14:23:28.757Z"},
            "cid": "bafy",
        },
    }
    for key, value in changes.items():
        if key in ("record", "cid", "rev"):
            event["commit"][key] = value
        else:
            event[key] = value
    return orjson.dumps(event)


ODD_LINES = [
    b'{"did":"did:plc:a","time_us":1779719009000000,"kind":"commit","commit":{"rev":"r",'
    b'"operation":"create","collection":"app.bsky.feed.like","rkey":"k","record":{"a":'
    b'"x\\u003cy \\u00e9 \\ud83d\\ude00 \\u001f \\/","n":1.50,"e":1e5,"f":-0,"g":1.5e+300,'
    b'"createdAt":"2026-05-25T14:23:28.757Z"},"cid":"c"}}',
    b'{"did": "did:plc:a", "time_us": 1779719009000000, "kind": "commit", "commit": '
    b'{"rev": "r", "operation": "create", "collection": "app.bsky.feed.like", "rkey": "k",'
    b' "record": {"createdAt": "2026-05-25T14:23:28Z", "subject": {"uri": "at://x"}}}}',
    _like(cursor=77),
    _like(record=None),
    _like(record="a string"),
    _like(record={"createdAt": 5, "subject": {"uri": 7}}),
    _like(record={"createdAt": "2026-05-25T14:23:28.757Z", "big": 2**64 - 1}),
    _like().replace(b'"createdAt"', b'"big":123456789012345678901234,"createdAt"'),
    _like(rev=None),
    _like(did="nobody"),
    _like(time_us=2**64 - 1),
    _like(time_us=0),
    _like(kind=None),
    b"not json",
    b"null",
    b"",
    b"[1,2]",
]


@pytest.mark.parametrize("index", range(len(ODD_LINES)))
def test_lines_this_path_cannot_prove_are_left_to_duckdb_in_their_place(
    both: tuple[RowBuilder, SqlRowBuilder], index: int
) -> None:
    """Escapes, fractions and exponents, whitespace, repeated keys, extra keys, null or
    mistyped values, rejects: between two plain likes, each gives DuckDB's row (or
    reject) at its own position."""
    fast, sql = both
    plain = _like()
    ids, payloads = entries([plain, ODD_LINES[index], plain], 3)
    assert_same(fast.build("likes", ids, payloads), sql.build("likes", ids, payloads))


def test_a_repeated_key_is_the_one_difference_and_keeps_the_record_as_sent(
    both: tuple[RowBuilder, SqlRowBuilder],
) -> None:
    """Documented in lake/rows.py: neither Jetstream nor atproto (DAG-CBOR maps have unique
    keys) sends one; DuckDB's typed column takes the first value, this path the last."""
    fast, sql = both
    line = _like().replace(b'"createdAt"', b'"subject":{"uri":"u","uri":"v"},"createdAt"')
    ids, payloads = entries([line], 1)
    mine, duck = fast.build("likes", ids, payloads).table, sql.build("likes", ids, payloads).table
    assert mine["record_json"].to_pylist() == duck["record_json"].to_pylist()
    assert (mine["subject_uri"][0].as_py(), duck["subject_uri"][0].as_py()) == ("v", "u")


CREATED = [
    "2026-05-25T14:23:28.757Z",
    "2026-05-25T14:23:28Z",
    "2026-05-25T14:23:28",
    "2026-05-25T14:23:28+09:00",
    "2026-05-25T14:23:28-00:30",
    "2026-05-25T14:23:28.1234567Z",
    "2026-05-25",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+09:00",
    "2026-13-45T00:00:00Z",
    "2026-02-30T00:00:00.000Z",
    "2026-05-25T24:00:00Z",
    "2026-05-25T14:23:60Z",
    "2026-05-25 14:23:28Z",
    "2026-5-5T1:2:3Z",
    "2026-05-25T14:23:28.Z",
    "yesterday",
    "",
    "2026-05-25T14:23:28.757z",
    "2026-05-25T14:23:28.757+0000",
    "10000-01-01T00:00:00Z",
]


def test_created_at_is_parsed_as_duckdb_parses_it_whatever_the_client_wrote(
    both: tuple[RowBuilder, SqlRowBuilder],
) -> None:
    fast, sql = both
    lines = [_like(record={"createdAt": c}) for c in CREATED]
    for per_entry in (1, len(lines)):
        ids, payloads = entries(lines, per_entry)
        assert_same(fast.build("likes", ids, payloads), sql.build("likes", ids, payloads))


def test_identity_and_account_payloads_that_are_not_plain_are_left_to_duckdb(
    both: tuple[RowBuilder, SqlRowBuilder], golden_lines: list[bytes]
) -> None:
    fast, sql = both
    base = {"did": "did:plc:y", "time_us": T0, "kind": "identity"}
    lines = [
        orjson.dumps({**base, "identity": {"did": "did:plc:y", "handle": "a\u00e9", "seq": 1}}),
        orjson.dumps({**base, "identity": {"seq": 2**64 - 1}}),
        orjson.dumps({**base, "identity": {"seq": "1", "active": "yes"}}),
        orjson.dumps({**base, "kind": "account", "account": {"active": False, "status": "x"}}),
        orjson.dumps({**base, "kind": "account", "identity": {"seq": 1}}),
        orjson.dumps({**base, "kind": "sync", "sync": {"blocks": "x"}}),
        b'{"did":"did:plc:y","time_us":1779719009000000,"kind":"identity","identity":'
        b'{"handle":"\\u00e9"}}',
        *[line for line in golden_lines if classify(line, 10**6) == "other"],
    ]
    for per_entry in (1, len(lines)):
        ids, payloads = entries(lines, per_entry)
        assert_same(fast.build("other", ids, payloads), sql.build("other", ids, payloads))


def test_an_entry_that_is_not_utf8_fails_as_it_does_in_duckdb(
    both: tuple[RowBuilder, SqlRowBuilder],
) -> None:
    """The salvage (pipeline/conversion.py) relies on it: the caller isolates the entry."""
    fast, _ = both
    bad = _like(record={"createdAt": "x"}).replace(b'"x"', b'"\xc3\x28"')
    with pytest.raises(conversion_errors()):
        fast.build("likes", *entries([_like(), bad], 2))


def test_the_writer_path_never_loads_duckdb() -> None:
    """DuckDB's library and heap were most of the writer's memory; only a line this path
    cannot convert loads it."""
    code = (
        "import sys\n"
        "from skybuffer.pipeline.datawriter import DataWriter\n"
        "from skybuffer.lake.rows import RowBuilder\n"
        "from skybuffer.testbed.generator import generate\n"
        "lines = [l for l in generate(3, 3000, 1779719009000000) if b'feed.like' in l]\n"
        "rows = RowBuilder().build('likes', ['1-0'], [b'\\n'.join(lines)])\n"
        "assert rows.table.num_rows == len(lines)\n"
        "print('duckdb' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_an_empty_chunk_gives_an_empty_table_of_the_schema() -> None:
    rows = RowBuilder().build("posts", [], [])
    assert rows.table.num_rows == 0 and rows.hours.type == pa.int64()
