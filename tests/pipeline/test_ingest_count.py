"""`--count N` is N more valid events from wherever the source resumes, for every source;
dead letters are taken but do not count, and the summary names events, dead letters and
the source's items apart.

Also covers: skybuffer.pipeline.prefetch, skybuffer.sources.memory,
skybuffer.sources.replay, skybuffer.sources.base (through the behaviour above).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from skybuffer.buffer.producer import Encoder
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import Keys
from skybuffer.pipeline.prefetch import Prefetcher
from skybuffer.settings import IngestSettings, Settings
from skybuffer.sources.memory import MemorySource
from skybuffer.testbed.generator import generate
from tests.conftest import buffered_events
from tests.e2e.test_operators import run_cli

KEYS = Keys()
T0 = 1_779_717_600_000_000
BAD = b'{"did":"nobody","time_us":1,"kind":"commit"}'


def _all_events(redis_server: ManagedRedis) -> list[bytes]:
    return [e for evs in buffered_events(redis_server.client()).values() for e in evs]


def _summary(stderr: bytes) -> str:
    return next(line for line in stderr.decode().splitlines() if line.startswith("ingested "))


def test_count_twice_takes_twice_n_events(
    make_settings: Callable[..., Settings], redis_server: ManagedRedis
) -> None:
    settings = make_settings()
    args = ("ingest", "--source", "synthetic", "--rate", "0", "--seed", "5", "--count", "2000")
    for run in (1, 2):
        done = run_cli(settings, *args)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert _summary(done.stderr).startswith(
            "ingested 2,000 events (+ 0 dead letters) from 2,000 generated events in "
        ), run
    client = redis_server.client()
    _, start_us, index = client.hget(KEYS.cursor("synthetic"), "position").decode().split(":")
    assert index == "4000"
    assert sorted(_all_events(redis_server)) == sorted(generate(5, 4000, int(start_us)))


def _mixed_file(path: Path, valid: list[bytes], bad_every: int) -> list[bytes]:
    """``valid`` with a dead letter after every ``bad_every``-th line and blank lines."""
    lines: list[bytes] = []
    for n, line in enumerate(valid, 1):
        lines.append(line)
        if n % bad_every == 0:
            lines += [BAD, b""]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_count_on_a_replay_file_is_valid_events_and_resumes_after_them(
    make_settings: Callable[..., Settings], redis_server: ManagedRedis, tmp_path: Path
) -> None:
    valid = generate(3, 3000, T0)
    path = tmp_path / "mixed.jsonl"
    _mixed_file(path, valid, bad_every=7)
    settings = make_settings()
    args = ("ingest", "--source", "replay", "--file", str(path), "--count", "1000")
    first = run_cli(settings, *args)
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    # 1,000 valid events; the 142 bad lines among them are dead letters, not events.
    assert _summary(first.stderr).startswith(
        "ingested 1,000 events (+ 142 dead letters) from 1,142 lines in "
    )
    assert sorted(_all_events(redis_server)) == sorted(valid[:1000])
    second = run_cli(settings, *args)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert _summary(second.stderr).startswith("ingested 1,000 events (+ 143 dead letters)")
    assert sorted(_all_events(redis_server)) == sorted(valid[:2000])
    client = redis_server.client()
    assert int(client.hget(KEYS.deadletter_counts, "bad_did") or 0) == 285


@pytest.mark.parametrize("count", [1, 499, 500, 501, 1234])
def test_the_prefetcher_hands_on_exactly_count_valid_events(count: int) -> None:
    """Dead letters near the end of a batch make the source be asked again with a
    smaller batch; never a valid event more than the count, none skipped."""
    valid = generate(9, 2000, T0)
    events = [e for n, line in enumerate(valid, 1) for e in ([line, BAD] if n % 3 else [line])]
    source = MemorySource(events)
    source.resume(None)
    settings = IngestSettings(batch_events=500)
    taken: list[bytes] = []
    dead = 0
    for item in Prefetcher(source, Encoder(10**6), settings, threading.Event(), count):
        taken += [e for evs in item.by_type.values() for e in evs]
        dead += len(item.deadletters)
        last = item.position
    assert sorted(taken) == sorted(valid[:count])  # each batch is grouped by type
    consumed = int(last)
    assert events[consumed - 1] == valid[count - 1]  # stops right after the N-th valid one
    assert dead == events[:consumed].count(BAD)
