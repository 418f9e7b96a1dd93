"""The spool keeps every batch it was given across a crash, ignores a torn tail, and
cuts back a write its disk refused."""

from __future__ import annotations

import errno
import resource
from pathlib import Path

import pytest

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


def test_a_write_the_disk_refuses_is_cut_back_so_later_records_stay_readable(
    tmp_path: Path, golden_lines: list[bytes]
) -> None:
    spool = Spool(tmp_path, "synthetic")
    batches = _batches(golden_lines, 4)
    spool.append(batches[:1])
    intact = spool.size()
    # A full disk without root: this process may not grow a file past a few more bytes.
    resource.prlimit(0, resource.RLIMIT_FSIZE, (intact + 100, resource.RLIM_INFINITY))
    try:
        with pytest.raises(OSError) as refused:
            spool.append(batches[1:3])
    finally:
        resource.prlimit(0, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    assert refused.value.errno == errno.EFBIG
    assert spool.size() == intact
    spool.append(batches[1:])  # space is back
    assert [b.seq for b in spool.read()] == [1, 2, 3, 4]
