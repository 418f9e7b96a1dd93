"""The Jetstream source against a real local Jetstream (replay server) and a real Redis.

Exactly-once is checked the strict way: the buffer's events, decoded, equal the served
file's lines as a multiset (nothing missing, nothing twice), after server kills,
ingester kill -9s, slow-consumer drops, silent connections and failovers.

Also covers: skybuffer.sources.inbox, skybuffer.sources.subscription,
skybuffer.sources.overlap (through the behaviour above).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from skybuffer import metrics
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import Keys
from skybuffer.errors import ConfigError
from skybuffer.pipeline.runner import build_ingester
from skybuffer.settings import JetstreamSettings, Settings
from skybuffer.sources.jetstream import JetstreamSource
from skybuffer.sources.overlap import Overlap, ResumePoint, host_tag, identity
from skybuffer.sources.subscription import subscribe_url
from skybuffer.testbed.generator import generate
from skybuffer.testbed.replay_server import EventFile, ReplayServer, ServerThread
from tests.conftest import GOLDEN, buffered_events, free_port, stop_pid

US = 1_000_000
FAST = {
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.3,
    "receive_timeout_seconds": 5.0,
    "collections": [],
}


# --- helpers --------------------------------------------------------------------------------
def jetstream_settings(overrides: dict[str, object] | None = None) -> JetstreamSettings:
    return JetstreamSettings.model_validate(FAST | (overrides or {}))


def write_events(path: Path, count: int, seed: int = 3) -> list[bytes]:
    """Synthetic events, shuffled within 0.25 s of time_us as real Jetstream output is."""
    lines = generate(seed, count, 1_780_000_000_000_000, rate=2000)
    shuffle = random.Random(seed).shuffle
    windows = [lines[i : i + 500] for i in range(0, count, 500)]
    for window in windows:
        shuffle(window)
    lines = [line for window in windows for line in window]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(path: Path, **options: object) -> ServerThread:
        thread = ServerThread(ReplayServer(EventFile.load(path), **options)).start()  # type: ignore[arg-type]
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


def everything(client: redis.Redis) -> list[bytes]:
    return sorted(e for events in buffered_events(client).values() for e in events)


def buffered(client: redis.Redis) -> int:
    return sum(int(n) for n in client.hgetall(Keys().event_counts).values())


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def reconnects(cause: str) -> float:
    value = metrics.REGISTRY.get_sample_value("skybuffer_source_reconnects_total", {"cause": cause})
    return value or 0.0


def overlap_dropped() -> float:
    return metrics.REGISTRY.get_sample_value("skybuffer_source_overlap_dropped_total") or 0.0


def take(source: JetstreamSource, n: int, timeout: float = 30.0) -> list[bytes]:
    """Iterate ``source`` until it has yielded ``n`` events."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    for batch in source.batches(1000, 0.05):
        out += batch.events
        if len(out) >= n or time.monotonic() > deadline:
            break
    return out


def ingester_process(settings: Settings, url: str, *extra: str) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "SKYBUFFER_REDIS__PORT": str(settings.redis.port),
        "SKYBUFFER_METRICS__INGEST_PORT": "0",
        "SKYBUFFER_JETSTREAM__BACKOFF_INITIAL_SECONDS": "0.05",
        "SKYBUFFER_JETSTREAM__BACKOFF_MAX_SECONDS": "0.3",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "skybuffer", "ingest", "--url", url, "--collections", "all",
         "--data-dir", str(settings.data_dir), *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


# --- the resume window, on its own -----------------------------------------------------------
def test_subscribe_url_repeats_wanted_collections_and_adds_cursor_and_compress() -> None:
    url = subscribe_url("wss://h/subscribe", ["a.b.c", "d.e.*"], 1_700_000_000_000_000, True)
    assert url == (
        "wss://h/subscribe?wantedCollections=a.b.c&wantedCollections=d.e.%2A"
        "&cursor=1700000000000000&compress=true"
    )
    assert subscribe_url("ws://h/subscribe", [], None, False) == "ws://h/subscribe"


def test_the_overlap_is_recognised_by_identity_so_late_events_are_kept(
    golden_lines: list[bytes],
) -> None:
    overlap = Overlap(3 * US, US, 4096)
    assert all(overlap.admit(line) for line in golden_lines[:5])
    late = golden_lines[5]  # time_us older than the newest admitted: new all the same
    assert orjson.loads(late)["time_us"] < overlap.max_us
    assert overlap.admit(late)
    assert not any(overlap.admit(line) for line in golden_lines[:6])
    assert overlap.duplicates == 6


def test_a_restored_position_drops_the_overlap_after_a_restart(golden_lines: list[bytes]) -> None:
    before = Overlap(3 * US, US, 4096)
    for line in golden_lines[:7]:
        before.admit(line)
    position = before.position()
    assert position.startswith("v1:")
    after = Overlap(3 * US, US, 4096)
    after.restore(position)
    assert [after.admit(line) for line in golden_lines] == [False] * 7 + [True] * 3
    assert after.resume_point().floor_us == before.resume_point().floor_us


def test_a_cursor_of_another_wire_version_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="not portable between wire versions.*cursor:jetstream"):
        Overlap(3 * US, US, 4096).restore("v2:123456")


def test_the_window_is_capped_and_the_rewind_shrinks_to_what_it_covers() -> None:
    overlap = Overlap(3 * US, US, 1000)
    for line in generate(5, 20_000, 1_780_000_000_000_000, rate=5000):
        overlap.admit(line)
    position = overlap.position()
    assert len(position) < 1000 * 8 + 100
    point = overlap.resume_point()
    assert point.max_us - point.floor_us < 3 * US  # type: ignore[operator]


def test_another_host_is_asked_from_later_by_the_failover_guard() -> None:
    point = ResumePoint(10 * US, 13 * US, host_tag("wss://a/subscribe"), US)
    assert point.cursor("wss://a/subscribe?cursor=1") == 10 * US
    assert point.cursor("wss://b/subscribe") == 11 * US
    assert ResumePoint(None, None, "", US).cursor("wss://a/subscribe") is None


def test_an_event_has_one_identity_whatever_the_key_order(golden_lines: list[bytes]) -> None:
    for line in golden_lines:
        reordered = orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)
        assert identity(reordered) == identity(line)
    assert len({identity(line)[0] for line in golden_lines}) == len(golden_lines)


# --- against the local Jetstream ------------------------------------------------------------
def test_wanted_collections_are_honoured_and_identity_account_arrive_as_other(
    serve: Callable[..., ServerThread], make_settings: Callable[..., Settings], client: redis.Redis
) -> None:
    server = serve(GOLDEN)
    settings = make_settings(jetstream=FAST | {"collections": ["app.bsky.feed.post"]})
    build_ingester(settings, "jetstream", url=server.url, count=3).run()
    found = buffered_events(client)
    assert len(found["posts"]) == 1
    assert {orjson.loads(e)["kind"] for e in found["other"]} == {"identity", "account"}
    assert sum(map(len, found.values())) == 3


def test_compressed_frames_are_decoded_into_the_buffer_byte_for_byte(
    serve: Callable[..., ServerThread],
    make_settings: Callable[..., Settings],
    client: redis.Redis,
    golden_lines: list[bytes],
) -> None:
    server = serve(GOLDEN)
    settings = make_settings(jetstream=FAST | {"compress": True})
    build_ingester(settings, "jetstream", url=server.url, count=10).run()
    assert everything(client) == sorted(golden_lines)


class CorruptingServer(ReplayServer):
    """Sends the event marked BREAK as a zstd frame that does not decode."""

    def _compress(self, raw: bytes) -> bytes:
        frame = super()._compress(raw)
        return frame[:8] + b"\x00garbage" if b"BREAK" in raw else frame


def test_malformed_frames_go_to_the_dead_letter_stream(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    client: redis.Redis,
    golden_lines: list[bytes],
) -> None:
    broken = golden_lines[0].replace(b'"did":"', b'"did":"BREAK', 1)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([b"not json at all", broken, *golden_lines[1:4]]))
    for compress in (False, True):
        client.delete(Keys().deadletter, *Keys().streams().values(), Keys().event_counts)
        client.delete(Keys().cursor("jetstream"))
        server = ServerThread(CorruptingServer(EventFile.load(path))).start()
        try:
            settings = make_settings(jetstream=FAST | {"compress": compress})
            stats = build_ingester(settings, "jetstream", url=server.url, count=3).run()
        finally:
            server.stop()
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(Keys().deadletter)  # type: ignore[assignment]
        reasons = sorted(fields[b"reason"] for _, fields in entries)
        expected = [b"bad_did", b"not_json"] if not compress else [b"bad_frame", b"not_json"]
        assert reasons == expected, compress
        assert everything(client) == sorted(golden_lines[1:4])
        assert (stats.events, stats.deadletters) == (3, 2)  # --count 3: valid events only


def test_an_event_older_than_the_checkpoint_is_not_lost_on_resume(
    serve: Callable[..., ServerThread], golden_lines: list[bytes]
) -> None:
    server = serve(GOLDEN)
    first = JetstreamSource(jetstream_settings(), urls=[server.url], count=5)
    first.resume(None)
    got = take(first, 5)
    position = first.position
    first.close()
    second = JetstreamSource(jetstream_settings(), urls=[server.url], count=5)
    second.resume(position)
    got += take(second, 5)
    second.close()
    assert sorted(got) == sorted(golden_lines)  # golden_lines[5] is older than [4]


def test_a_server_killed_mid_stream_and_restarted_leaves_every_event_exactly_once(
    tmp_path: Path, make_settings: Callable[..., Settings], client: redis.Redis
) -> None:
    lines = write_events(tmp_path / "events.jsonl", 8000)
    port = free_port()
    command = [sys.executable, "-m", "skybuffer", "replay-server", "--file",
               str(tmp_path / "events.jsonl"), "--port", str(port), "--rate", "4000"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = make_settings(jetstream=FAST | {"receive_timeout_seconds": 1.0})
    ingester = build_ingester(settings, "jetstream", url=f"ws://127.0.0.1:{port}/subscribe")
    stop = threading.Event()
    thread = threading.Thread(target=ingester.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: buffered(client) >= 2000, what="events before the kill")
        failed = reconnects("connect_failed")
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        wait_until(lambda: reconnects("connect_failed") > failed, what="a refused reconnect")
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: buffered(client) >= len(lines), what="every event")
        silent = reconnects("silent")  # then a silent-timeout reconnect replays the overlap,
        wait_until(lambda: reconnects("silent") > silent, what="a silent reconnect")
        dropped = overlap_dropped()  # which must be dropped (again at every such reconnect)
        wait_until(lambda: overlap_dropped() > dropped, what="the replayed overlap dropped")
    finally:
        stop.set()
        thread.join(30)
        stop_pid(server.pid)
    assert everything(client) == sorted(lines)


def test_an_ingester_killed_with_sigkill_and_restarted_buffers_every_event_exactly_once(
    tmp_path: Path,
    serve: Callable[..., ServerThread],
    make_settings: Callable[..., Settings],
    redis_server: ManagedRedis,
) -> None:
    lines = write_events(tmp_path / "events.jsonl", 8000)
    server = serve(tmp_path / "events.jsonl", rate=4000)
    settings, client = make_settings(), redis_server.client()
    first = ingester_process(settings, server.url)
    try:
        wait_until(lambda: buffered(client) >= 2000, what="events before the kill")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        second = ingester_process(settings, server.url)
        try:
            wait_until(lambda: buffered(client) >= len(lines), what="every event")
            time.sleep(1.0)
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        finally:
            stop_pid(second.pid)
    finally:
        stop_pid(first.pid)
    assert everything(client) == sorted(lines)
    assert server.server.stats.cursors[-1] is not None  # the restart resumed from a cursor


def test_a_slow_consumer_dropped_by_the_server_resumes_from_its_cursor_losing_nothing(
    tmp_path: Path, serve: Callable[..., ServerThread]
) -> None:
    """The drop comes on command once the reader is held back by a full inbox, not when
    an outbox happens to fill (that depends on how busy the machine is)."""
    lines = write_events(tmp_path / "events.jsonl", 20_000)
    server = serve(tmp_path / "events.jsonl")  # unpaced: it never drops anyone by itself
    settings = jetstream_settings({"queue_events": 500, "ping_interval_seconds": None})
    source = JetstreamSource(settings, urls=[server.url], count=len(lines))
    source.resume(None)
    slow_before = reconnects("slow_consumer")
    got: list[bytes] = []
    for batch in source.batches(1000, 0.05):
        got += batch.events
        if server.server.stats.slow_disconnects == 0 and got:
            wait_until(lambda: source.held_back, what="the reader to wait for the ingester")
            assert server.drop_clients() == 1
    source.close()
    assert sorted(got) == sorted(lines)
    assert reconnects("slow_consumer") > slow_before
    assert server.server.stats.cursors[-1] is not None


def test_repeated_connection_failures_rotate_to_the_next_host(
    serve: Callable[..., ServerThread], golden_lines: list[bytes]
) -> None:
    server = serve(GOLDEN)
    dead = f"ws://127.0.0.1:{free_port()}/subscribe"
    failed_before = reconnects("connect_failed")
    settings = jetstream_settings({"failures_before_rotate": 2})
    source = JetstreamSource(settings, urls=[dead, server.url], count=10)
    source.resume(None)
    assert sorted(take(source, 10)) == sorted(golden_lines)
    source.close()
    assert reconnects("connect_failed") - failed_before == 2


def test_a_silent_connection_is_noticed_and_resumed_without_duplicates(
    serve: Callable[..., ServerThread], golden_lines: list[bytes]
) -> None:
    server = serve(GOLDEN)
    silent_before = reconnects("silent")
    settings = jetstream_settings({"receive_timeout_seconds": 0.3})
    source = JetstreamSource(settings, urls=[server.url])
    source.resume(None)
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    for batch in source.batches(1000, 0.05):
        got += batch.events
        silent = reconnects("silent") - silent_before
        if len(got) >= len(golden_lines) and silent >= 2 and server.server.stats.connections >= 3:
            break
        assert time.monotonic() < deadline, f"after 60 s: {silent} silent reconnects, {len(got)}"
    source.close()
    assert sorted(got) == sorted(golden_lines)


def test_a_peer_that_stops_answering_pings_is_dropped_and_the_source_comes_back(
    tmp_path: Path,
) -> None:
    lines = write_events(tmp_path / "events.jsonl", 3000)
    port = free_port()
    command = [sys.executable, "-m", "skybuffer", "replay-server", "--file",
               str(tmp_path / "events.jsonl"), "--port", str(port), "--rate", "2000"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    keepalive_before = reconnects("keepalive_timeout")
    settings = jetstream_settings(
        {"ping_interval_seconds": 0.2, "ping_timeout_seconds": 0.3, "open_timeout_seconds": 0.5,
         "receive_timeout_seconds": 30.0}
    )  # fmt: skip
    source = JetstreamSource(settings, urls=[f"ws://127.0.0.1:{port}/subscribe"], count=len(lines))
    source.resume(None)
    got: list[bytes] = []
    try:
        assert server.stdout is not None and server.stdout.readline()  # listening
        for batch in source.batches(1000, 0.05):
            got += batch.events
            if len(got) >= 500 and reconnects("keepalive_timeout") == keepalive_before:
                os.kill(server.pid, signal.SIGSTOP)  # TCP stays up, nothing answers
                wait_until(lambda: reconnects("keepalive_timeout") > keepalive_before)
                os.kill(server.pid, signal.SIGCONT)
    finally:
        source.close()
        os.kill(server.pid, signal.SIGCONT)
        stop_pid(server.pid)
    assert sorted(got) == sorted(lines)


def test_ingest_count_stops_once_n_events_are_buffered(
    serve: Callable[..., ServerThread],
    make_settings: Callable[..., Settings],
    redis_server: ManagedRedis,
) -> None:
    server = serve(GOLDEN)
    process = ingester_process(make_settings(), server.url, "--count", "7")
    try:
        assert process.wait(60) == 0
    finally:
        stop_pid(process.pid)
    assert buffered(redis_server.client()) == 7
