"""The local Jetstream: v1 cursor, filter, compression, pacing, outbox and loop semantics.

Covers on purpose: testbed/replay_server.py and testbed/event_file.py (what a request
selects of the file, and the loop's shifted passes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import zstandard
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from skybuffer.buffer.codec import jetstream_dictionary
from skybuffer.testbed.generator import generate
from skybuffer.testbed.replay_server import EventFile, ReplayServer, ServerThread
from tests.conftest import GOLDEN, free_port, stop_pid


@pytest.fixture
def golden_server() -> Iterator[ServerThread]:
    thread = ServerThread(ReplayServer(EventFile.load(GOLDEN))).start()
    yield thread
    thread.stop()


def receive_all(url: str, expected: int) -> list[bytes | str]:
    """The ``expected`` frames a subscription should get (each within a deadline that only
    bounds a hang), and no more: none may follow within half a second."""
    with connect(url, proxy=None, max_size=None) as ws:
        out = [ws.recv(timeout=30) for _ in range(expected)]
        with pytest.raises(TimeoutError):
            out.append(ws.recv(timeout=0.5))
        return out


def as_events(frames: list[bytes | str]) -> list[dict]:
    return [orjson.loads(frame) for frame in frames]


def test_without_a_cursor_every_event_is_sent_in_file_order(
    golden_server: ServerThread, golden_lines: list[bytes]
) -> None:
    frames = receive_all(golden_server.url, len(golden_lines))
    assert [f.encode() if isinstance(f, str) else f for f in frames] == golden_lines


def test_a_cursor_sends_events_at_or_after_it_in_file_order_even_when_out_of_order(
    golden_server: ServerThread, golden_lines: list[bytes]
) -> None:
    times = [orjson.loads(line)["time_us"] for line in golden_lines]
    cursor = sorted(times)[4]
    expected = [t for t in times if t >= cursor]
    frames = receive_all(f"{golden_server.url}?cursor={cursor}", len(expected))
    received = [e["time_us"] for e in as_events(frames)]
    assert received == expected
    assert received != sorted(received)  # the file's disorder is kept, as on the real service


def test_wanted_collections_filter_commits_but_identity_and_account_always_arrive(
    golden_server: ServerThread, golden_lines: list[bytes]
) -> None:
    wanted = "wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.*"
    url = f"{golden_server.url}?{wanted}"
    kept = [e for e in map(orjson.loads, golden_lines) if e["kind"] != "commit"
            or e["commit"]["collection"] == "app.bsky.feed.post"
            or e["commit"]["collection"].startswith("app.bsky.graph.")]  # fmt: skip
    events = as_events(receive_all(url, len(kept)))
    assert events == kept
    commits = {e["commit"]["collection"] for e in events if e["kind"] == "commit"}
    assert commits == {"app.bsky.feed.post", "app.bsky.graph.follow", "app.bsky.graph.block"}
    assert {e["kind"] for e in events} == {"commit", "identity", "account"}


def test_compress_sends_binary_zstd_frames_that_decode_with_jetstreams_dictionary(
    golden_server: ServerThread, golden_lines: list[bytes]
) -> None:
    frames = receive_all(f"{golden_server.url}?compress=true", len(golden_lines))
    assert all(isinstance(f, bytes) for f in frames)
    dctx = zstandard.ZstdDecompressor(dict_data=jetstream_dictionary())
    assert [dctx.decompress(f) for f in frames] == golden_lines  # type: ignore[arg-type]
    assert sum(map(len, frames)) < sum(map(len, golden_lines)) * 0.8


def test_paths_other_than_subscribe_are_refused(golden_server: ServerThread) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(golden_server.url.replace("/subscribe", "/other"), proxy=None)
    assert refused.value.response.status_code == 404


def test_after_the_last_event_the_connection_stays_open_and_quiet(
    golden_server: ServerThread,
) -> None:
    with connect(golden_server.url, proxy=None) as ws:
        for _ in range(10):
            ws.recv(timeout=30)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
        assert ws.ping().wait(30)  # still alive: a quiet live tail


def test_loop_starts_over_with_time_us_rev_and_seq_shifted_so_every_event_is_unique(
    golden_lines: list[bytes],
) -> None:
    server = ServerThread(ReplayServer(EventFile.load(GOLDEN), loop=True)).start()
    try:
        with connect(server.url, proxy=None, close_timeout=0.1) as ws:
            events = [orjson.loads(ws.recv(timeout=5)) for _ in range(3 * len(golden_lines))]
    finally:
        server.stop()
    firsts, seconds = events[:10], events[10:20]
    span = max(e["time_us"] for e in firsts) - min(e["time_us"] for e in firsts) + 1
    assert [b["time_us"] - a["time_us"] for a, b in zip(firsts, seconds, strict=True)] == [
        span
    ] * 10
    revs = [e["commit"]["rev"] for e in events if e["kind"] == "commit"]
    seqs = [e[e["kind"]]["seq"] for e in events if e["kind"] != "commit"]
    assert len(set(revs)) == len(revs) and len(set(seqs)) == len(seqs)
    assert all(len(rev) == 13 for rev in revs)  # still atproto TIDs
    assert [len(e) for e in seconds] == [len(e) for e in firsts]


def test_loop_honours_a_cursor_inside_a_later_pass() -> None:
    source = EventFile.load(GOLDEN)
    server = ServerThread(ReplayServer(source, loop=True)).start()
    cursor = source.first_us + 2 * source.span_us + 1
    try:
        with connect(f"{server.url}?cursor={cursor}", proxy=None, close_timeout=0.1) as ws:
            times = [orjson.loads(ws.recv(timeout=5))["time_us"] for _ in range(15)]
    finally:
        server.stop()
    assert min(times) >= cursor
    assert min(times) < source.first_us + 3 * source.span_us  # resumed inside pass 2


def test_a_paced_server_drops_a_client_that_stops_reading_once_its_outbox_is_full(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(generate(7, 60_000, 1_780_000_000_000_000)))
    server = ServerThread(ReplayServer(EventFile.load(path), rate=40_000, outbox=500)).start()
    try:
        with connect(server.url, proxy=None, max_queue=4) as ws:
            ws.recv(timeout=5)
            deadline = time.monotonic() + 30
            while server.server.stats.slow_disconnects == 0 and time.monotonic() < deadline:
                time.sleep(0.05)  # not reading: the kernel buffers, then the outbox, fill
            assert server.server.stats.slow_disconnects == 1
            with pytest.raises(ConnectionClosed):
                _drain(ws)
    finally:
        server.stop()


def _drain(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=10)


def test_the_command_serves_a_zst_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(GOLDEN.read_bytes()))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "skybuffer", "replay-server", "--file", str(path),
         "--port", str(port), "--rate", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert b"replay-server: 10 events" in proc.stdout.readline()
        assert len(receive_all(f"ws://127.0.0.1:{port}/subscribe", 10)) == 10
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop_pid(proc.pid)
