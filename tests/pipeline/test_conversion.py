"""Converting entries to rows: one bad event costs only itself, whatever makes it bad.

The conversion turns every unusable value it knows of into NULL or a reject, and a byte
that is not UTF-8 fails the whole chunk: the DataWriter tests cover those with real
entries. Other failures of a chunk are injected here by a row builder that fails on a
marker, to show that the salvage finds exactly the events at fault by bisection, and that
a conversion that fails for every event is raised (retried), not dead-lettered.
"""

from __future__ import annotations

import duckdb
import orjson
import pyarrow as pa
import pytest

from skybuffer.buffer.codec import Codec, Decoder
from skybuffer.buffer.consumer import Entry
from skybuffer.lake.rows import RowBuilder
from skybuffer.lake.schema import Rows
from skybuffer.pipeline.conversion import Converter
from skybuffer.testbed.generator import generate

T0 = 1_779_717_600_000_000
MARK = b"POISON"


class FailingOnMark(RowBuilder):
    """The conversion, failing for any input that holds MARK (or for all)."""

    def __init__(self, always: bool = False) -> None:
        super().__init__()
        self.always = always

    def build(self, type_: str, ids: list[str], payloads: list[bytes]) -> Rows:
        if self.always or any(MARK in p for p in payloads):
            raise duckdb.ConversionException("injected conversion failure")
        return super().build(type_, ids, payloads)


def likes(n: int) -> list[bytes]:
    lines = [line for line in generate(1, 20 * n, T0) if b"feed.like" in line]
    return lines[:n]


def poisoned(line: bytes) -> bytes:
    event = orjson.loads(line)
    event["note"] = MARK.decode()
    return orjson.dumps(event)


def entry(entry_id: str, lines: list[bytes]) -> Entry:
    return Entry(entry_id, Codec().encode(lines))


def test_the_salvage_finds_exactly_the_failing_events_and_keeps_the_others_in_place() -> None:
    good = likes(300)
    lines = list(good)
    for i in (3, 150, 299):
        lines[i] = poisoned(lines[i])
    converter = Converter(lambda t: f"stream:{t}", FailingOnMark())
    converted = converter.convert("likes", [entry("1-0", good[:10]), entry("2-0", lines)])
    assert converted.rows is not None
    table = converted.rows.table
    assert table.num_rows == 10 + 297
    kept = table.filter(pa.compute.equal(table["stream_id"], "2-0"))
    indexes = set(kept["stream_index"].to_pylist())
    assert indexes == set(range(300)) - {3, 150, 299}  # neighbours keep their positions
    [letter] = converted.dead["2-0"]
    assert (letter.reason, letter.events) == ("unconvertible", 3)
    assert "events 3,150,299 of entry 2-0 of stream:likes" in letter.detail
    fields = {b"v": letter.codec, b"n": str(letter.events).encode(), b"d": letter.raw}
    assert Decoder().decode(fields) == [lines[3], lines[150], lines[299]]
    assert "1-0" not in converted.dead


def test_a_conversion_that_fails_for_every_event_is_raised_not_dead_lettered() -> None:
    converter = Converter(lambda t: t, FailingOnMark(always=True))
    with pytest.raises(duckdb.ConversionException):
        converter.convert("likes", [entry("1-0", likes(5)), entry("2-0", likes(5))])


def test_a_bundle_of_some_events_of_an_entry_is_no_larger_than_the_entry() -> None:
    lines = [poisoned(line) for line in likes(400)]
    stored = entry("1-0", lines)
    converter = Converter(lambda t: t, FailingOnMark())
    for i in range(0, 400, 2):
        lines[i] = lines[i].replace(MARK, b"fine")
    converted = converter.convert("likes", [entry("1-0", lines)])
    [letter] = converted.dead["1-0"]
    assert letter.events == 200
    assert len(letter.raw) <= len(stored.fields[b"d"])


class Recording(RowBuilder):
    """The conversion, recording the entries of each chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[list[tuple[str, int]]] = []

    def build(self, type_: str, ids: list[str], payloads: list[bytes]) -> Rows:
        self.queries.append([(i, len(p)) for i, p in zip(ids, payloads, strict=True)])
        return super().build(type_, ids, payloads)


def test_a_batch_is_converted_in_byte_bounded_chunks_of_whole_entries_and_released() -> None:
    """What bounds the conversion's memory whatever the batch: each chunk holds whole entries up
    to ``chunk_bytes`` of events (one entry over at most); every event converts once, in
    order; each entry keeps only its count once decoded (all the commit needs)."""
    lines = likes(200)
    entries = [entry(f"1-{i}", lines[i * 10 : i * 10 + 10]) for i in range(20)]
    entries.insert(7, Entry("1-poison", {b"v": b"1", b"n": b"3", b"d": b"not zstd"}))
    bound = 3 * len(b"\n".join(lines[:10]))
    rows = Recording()
    converter = Converter(lambda t: f"stream:{t}", rows)
    chunks = list(converter.convert_chunks("likes", entries, bound))
    assert len(rows.queries) == len(chunks) > 4
    for query in rows.queries[:-1]:
        sizes = [size for _, size in query]
        assert sum(sizes) >= bound > sum(sizes[:-1])
    assert sum(size for _, size in rows.queries[-1]) > 0
    converted = [c.rows.table for c in chunks if c.rows is not None]
    assert pa.concat_tables(converted)["stream_id"].to_pylist() == [
        f"1-{i}" for i in range(20) for _ in range(10)
    ]
    assert [d for c in chunks for d in c.dead] == ["1-poison"]
    assert all(set(e.fields) == {b"n"} for e in entries)
    assert sum(e.events for e in entries) == 203


def test_the_duckdb_converter_gives_the_same_rows_and_dead_letters() -> None:
    """``writer.converter = "duckdb"``: the SQL reference for every line."""
    from skybuffer.lake.extraction import SqlRowBuilder

    lines = likes(50)
    bad = [lines[0], b"not json", lines[1]]
    made = [
        Converter(lambda t: t, builder).convert("likes", [entry("1-0", lines), entry("2-0", bad)])
        for builder in (RowBuilder(), SqlRowBuilder())
    ]
    assert made[0].rows is not None and made[1].rows is not None
    assert made[0].rows.table.equals(made[1].rows.table)
    assert [(d.reason, d.events) for d in made[0].dead["2-0"]] == [("not_json", 1)]
    assert [(d.reason, d.events) for d in made[1].dead["2-0"]] == [("not_json", 1)]
