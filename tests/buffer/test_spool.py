"""The spool keeps every batch it was given across a crash, and ignores a torn tail."""

from __future__ import annotations

from pathlib import Path

from skybuffer.buffer.producer import Encoder
from skybuffer.buffer.spool import Spool


def _batches(golden_lines: list[bytes], count: int) -> list:
    encoder = Encoder(max_event_bytes=10_000)
    return [encoder.encode(seq, str(seq), golden_lines + [b"{bad"]) for seq in range(1, count + 1)]


def test_spooled_batches_read_back_exactly_in_order(
    tmp_path: Path, golden_lines: list[bytes]
) -> None:
    spool = Spool(tmp_path, "synthetic")
    batches = _batches(golden_lines, 3)
    spool.append(batches[:2])
    spool.append(batches[2:])
    read = list(spool.read())
    assert [b.seq for b in read] == [1, 2, 3]
    assert [b.entries for b in read] == [b.entries for b in batches]
    assert [b.deadletters for b in read] == [b.deadletters for b in batches]


def test_a_record_torn_by_a_crash_is_ignored_and_the_rest_survives(
    tmp_path: Path, golden_lines: list[bytes]
) -> None:
    spool = Spool(tmp_path, "synthetic")
    spool.append(_batches(golden_lines, 2))
    intact = spool.size()
    spool.append(_batches(golden_lines, 3)[2:])
    with open(spool.path, "r+b") as handle:  # the crash: the last write half done
        handle.truncate(intact + (spool.size() - intact) // 2)
    assert [b.seq for b in spool.read()] == [1, 2]
    spool.clear()
    assert spool.size() == 0 and list(spool.read()) == []
