"""The ingester buffers every event exactly once: through a full Redis, a Redis that goes
away, and a kill -9 of the ingester itself.

Also covers: skybuffer.pipeline.holding, skybuffer.pipeline.tally, skybuffer.pipeline.redis_health,
skybuffer.pipeline.runner (through the behaviour above).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from skybuffer.buffer.codec import Decoder
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES, Keys
from skybuffer.events import classify
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.runner import build_ingester
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate
from tests.conftest import GOLDEN, buffered_events, stop_pid

KEYS = Keys()


def _assert_exactly(found: list[bytes], expected: list[bytes]) -> None:
    """found holds each expected event exactly once (a readable failure otherwise)."""
    have, want = Counter(found), Counter(expected)
    missing = sum((want - have).values())
    extra = sum((have - want).values())
    assert (missing, extra) == (0, 0), f"{missing} missing, {extra} unexpected of {len(want)}"


def _all_events(client: redis.Redis) -> list[bytes]:
    return [e for events in buffered_events(client).values() for e in events]


def _expected_for(client: redis.Redis, count: int, rate: float = 0) -> list[bytes]:
    """The events a synthetic run of that seed produced (time_us steps by the rate)."""
    seed, start_us, _ = client.hget(KEYS.cursor("synthetic"), "position").decode().split(":")
    return generate(int(seed), count, int(start_us), rate=rate or 1500)


def test_ingest_buffers_every_event_once_in_its_type(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    stats = build_ingester(settings, "synthetic", count=20_000, rate=0).run()
    client = redis_server.client()
    found = buffered_events(client)
    assert sorted(e for evs in found.values() for e in evs) == sorted(_expected_for(client, 20_000))
    for type_, events in found.items():
        assert all(classify(e, 10**6) == type_ for e in events)
        assert int(client.hget(KEYS.event_counts, type_) or 0) == len(events)
    assert stats.events == 20_000
    assert client.hget(KEYS.cursor("synthetic"), "seq") == str(stats.batches).encode()


def test_bad_lines_of_a_replay_go_to_the_dead_letter_stream_with_reasons(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    bad = [b"{not json", b"[]", b'{"did":"did:plc:x","kind":"commit","time_us":"soon"}']
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(GOLDEN.read_bytes().splitlines() + bad) + b"\n")
    build_ingester(make_settings(), "replay", file=path).run()
    client = redis_server.client()
    letters = client.xrange(KEYS.deadletter)
    assert [f[b"reason"] for _, f in letters] == [b"not_json", b"not_object", b"bad_time_us"]
    assert [f[b"raw"] for _, f in letters] == bad
    assert len(_all_events(client)) == len(GOLDEN.read_bytes().splitlines())


def _drain_forever(client: redis.Redis, stop: threading.Event, seen: list[bytes]) -> None:
    """A stand-in consumer: read, remember and delete entries, freeing memory."""
    decoder = Decoder()
    while not stop.is_set():
        moved = 0
        for type_ in TYPES:
            for entry_id, fields in client.xrange(KEYS.stream(type_), count=50):
                events = decoder.decode(fields)
                seen.extend(events)
                # XDEL alone: at maxmemory Redis refuses HINCRBY and anything queued in
                # MULTI (both may grow memory), but XDEL, which frees it, still runs.
                client.xdel(KEYS.stream(type_), entry_id)
                moved += 1
        if not moved:
            time.sleep(0.05)


def test_a_full_redis_pushes_back_and_loses_nothing(
    start_redis: Callable[..., ManagedRedis], make_settings: Callable[..., Settings]
) -> None:
    server = start_redis(maxmemory="30mb")
    settings = make_settings(redis={"maxmemory": "30mb"})
    ingester = build_ingester(settings, "synthetic", count=400_000, rate=0)
    client = server.client()
    seen: list[bytes] = []
    stop = threading.Event()
    drain = threading.Thread(target=_drain_forever, args=(client, stop, seen))
    # Let the buffer fill past the high-water mark before the consumer starts.
    ingest = threading.Thread(target=ingester.run)
    ingest.start()
    deadline = time.monotonic() + 60
    while ingester.stats.backpressure_episodes == 0 and ingest.is_alive():
        assert time.monotonic() < deadline, "backpressure never engaged"
        time.sleep(0.05)
    drain.start()
    ingest.join(timeout=240)
    assert not ingest.is_alive()
    deadline = time.monotonic() + 60
    while sum(len(v) for v in buffered_events(client).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    drain.join()
    assert ingester.stats.backpressure_seconds > 0
    assert server.client("admin").info("stats")["evicted_keys"] == 0
    expected = _expected_for(client, 400_000)
    assert len(seen) == len(expected)
    assert Counter(seen) == Counter(expected)


def test_redis_stopped_mid_ingest_spools_and_replays_with_nothing_lost(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(ingest={"memory_queue_batches": 2, "batch_events": 500,
                                     "backoff_max_seconds": 0.5})  # fmt: skip
    ingester = build_ingester(settings, "synthetic", count=60_000, rate=15_000)
    thread = threading.Thread(target=ingester.run)
    thread.start()
    while ingester.stats.events < 5_000:
        time.sleep(0.02)
    redis_server.stop()
    spool = ingester.spool
    deadline = time.monotonic() + 30
    while spool.size() == 0:
        assert time.monotonic() < deadline, "nothing was spooled while Redis was down"
        time.sleep(0.05)
    time.sleep(2)  # several seconds of outage in all
    redis_server.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    client = redis_server.client()
    _assert_exactly(_all_events(client), _expected_for(client, 60_000, rate=15_000))
    assert spool.size() == 0


def _ingest_process(settings: Settings, count: int, rate: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SKYBUFFER_DATA_DIR": str(settings.data_dir),
        "SKYBUFFER_REDIS__PORT": str(settings.redis.port),
        "SKYBUFFER_METRICS__INGEST_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "skybuffer", "ingest", "--source", "synthetic",
         "--count", str(count), "--rate", str(rate), "--seed", "7"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_ingester_killed_with_sigkill_resumes_without_gap_or_duplicate(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    client = redis_server.client()
    # Killed at a tenth of the way in, at a pace that leaves seconds to spare even on a
    # loaded machine (the pace counts from the start, so a starved test thread would
    # see the rest arrive in full batches, never sooner than the pace allows).
    first = _ingest_process(settings, 40_000, 8_000)
    deadline = time.monotonic() + 60
    while sum(int(v) for v in client.hgetall(KEYS.event_counts).values()) < 4_000:
        assert time.monotonic() < deadline and first.poll() is None, first.stderr
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    partial = len(_all_events(client))
    assert 0 < partial < 40_000
    # --count is N more from where the source resumes: the rest of the 40,000.
    second = _ingest_process(settings, 40_000 - partial, 8_000)
    try:
        assert second.wait(timeout=120) == 0, second.stderr.read() if second.stderr else ""
    finally:
        stop_pid(second.pid)
    events = _all_events(client)
    assert len(events) == 40_000
    assert sorted(events) == sorted(_expected_for(client, 40_000, rate=8_000))


def test_cursor_and_batch_land_in_one_transaction(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    ingester: Ingester = build_ingester(make_settings(), "synthetic", count=3_000, rate=0)
    ingester.run()
    client = redis_server.client()
    position = client.hget(KEYS.cursor("synthetic"), "position").decode()
    assert position.endswith(":3000")
    assert orjson.loads(_all_events(client)[0])["time_us"] > 0
