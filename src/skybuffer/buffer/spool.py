"""An append-only, fsync'd file of batches that could not reach Redis.

When Redis is unreachable the ingester keeps the batches it already took from its
source: first in a bounded memory queue, then here. Records are length-prefixed and
checksummed, so a record torn by a crash is recognised and ignored (its events are
re-read from the source, whose cursor never moved past them). On recovery the spool
is replayed, in order, before anything newer, then truncated.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from skybuffer.buffer.deadletter import DeadLetter
from skybuffer.buffer.producer import EncodedBatch
from skybuffer.privilege import PRIVATE_FILE, make_private
from skybuffer.processes import fsync

_HEADER = struct.Struct("<II")  # payload length, crc32


class Spool:
    """The on-disk overflow of one ingester: its records are events, so the file is 0600
    in a 0700 directory (an existing looser spool is tightened when it is opened)."""

    def __init__(self, directory: Path, source: str) -> None:
        self.path = directory / f"{source}.spool"
        make_private(directory)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, batches: list[EncodedBatch]) -> int:
        """Append and fsync: once this returns, the batches survive a crash; returns the
        bytes appended. If the disk refuses (full, a file size limit), the file is cut
        back to what it held before and the OSError raised: a torn record would hide
        every record appended after it once space is back."""
        before = self.size()
        try:
            self._append(batches)
        except OSError:
            self._cut_back(before)
            raise
        return self.size() - before

    def _cut_back(self, size: int) -> None:
        try:
            os.truncate(self.path, size)
        except OSError:
            pass  # read() stops at the torn tail; clear() removes it after the replay

    def _append(self, batches: list[EncodedBatch]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        with os.fdopen(fd, "ab") as handle:
            for batch in batches:
                payload = _pack(batch)
                handle.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            handle.flush()
            os.fsync(handle.fileno())
        fsync(self.path.parent)

    def read(self) -> Iterator[EncodedBatch]:
        """Every intact record in order; stops at a torn or corrupt tail."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            while header := handle.read(_HEADER.size):
                if len(header) < _HEADER.size:
                    return
                length, crc = _HEADER.unpack(header)
                payload = handle.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    return
                yield _unpack(payload)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync(self.path.parent)


def _pack(batch: EncodedBatch) -> bytes:
    blobs: list[bytes] = []
    parts = []
    for type_, fields in batch.entries.items():
        names = sorted(fields)
        parts.append([type_, batch.counts[type_], [[n.decode(), len(fields[n])] for n in names]])
        blobs.extend(fields[n] for n in names)
    dead = []
    for letter in batch.deadletters:
        dead.append(
            [
                str(letter.reason),
                letter.detail,
                len(letter.raw),
                letter.codec.decode(),
                letter.events,
            ]
        )
        blobs.append(letter.raw)
    header = orjson.dumps(
        {
            "seq": batch.seq,
            "position": batch.position,
            "parts": parts,
            "dead": dead,
            "raw_bytes": batch.raw_bytes,
        }
    )
    return struct.pack("<I", len(header)) + header + b"".join(blobs)


def _unpack(payload: bytes) -> EncodedBatch:
    (hlen,) = struct.unpack_from("<I", payload)
    header = orjson.loads(payload[4 : 4 + hlen])
    offset = 4 + hlen
    entries: dict[str, dict[bytes, bytes]] = {}
    counts: dict[str, int] = {}
    for type_, count, fields in header["parts"]:
        entry: dict[bytes, bytes] = {}
        for name, length in fields:
            entry[name.encode()] = payload[offset : offset + length]
            offset += length
        entries[type_], counts[type_] = entry, count
    dead = []
    for reason, detail, length, *bundle in header["dead"]:
        codec, events = bundle or ("", 1)  # spools of older versions: single events
        raw = payload[offset : offset + length]
        dead.append(DeadLetter(reason, raw, detail, codec.encode(), events))
        offset += length
    return EncodedBatch(
        header["seq"], header["position"], entries, counts, dead, header["raw_bytes"]
    )
