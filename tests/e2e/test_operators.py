"""What operators do, on real processes: two of each, kill -9, SIGSTOP past a lease, a
second `run`, a Redis that forgets. Afterwards every event is counted by identity.

Randomness (which process is killed when) is seeded, so a failure can be replayed.

Also covers: skybuffer.pipeline.forgetting, skybuffer.ops.chaos.forget,
skybuffer.ops.chaos.pipeline_run (through the behaviour above).
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import redis

from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES, Keys
from skybuffer.events import identity
from skybuffer.lake.writer import PUBLISH_LOCK
from skybuffer.ops.chaos.forget import forget_once
from skybuffer.ops.chaos.pipeline_run import lake_identities
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate
from tests.conftest import stop_pid
from tests.pipeline.test_datawriter import buffer, writer_env

KEYS = Keys()
T0 = 1_779_717_600_000_000  # 2026-05-25T14:00:00Z
DEADLINE = 300.0
"""Bounds a hang only; nothing here depends on how fast the machine is."""


# --- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_server: ManagedRedis) -> Settings:
    return make_settings()


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    """The data dir's environment, with leases short enough to expire within a test."""
    short = {"SKYBUFFER_WRITER__LEASE_SECONDS": "3", "SKYBUFFER_INGEST__LEASE_SECONDS": "3"}
    return writer_env(settings, **{**short, **extra})


def skybuffer(settings: Settings, *args: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "skybuffer", *args],
            env=env_of(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    """One skybuffer command to its end, its output captured."""
    command = [sys.executable, "-m", "skybuffer", *args]
    return subprocess.run(command, env=env_of(settings), capture_output=True, timeout=DEADLINE)


def events_file(path: Path, count: int, seed: int = 7) -> Counter[tuple[object, ...]]:
    lines = generate(seed, count, T0)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return Counter(identity(orjson.loads(line)) for line in lines)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def buffered(client: redis.Redis) -> int:
    return sum(int(v) for v in client.hgetall(KEYS.event_counts).values())


def confirmed(client: redis.Redis, source: str = "replay") -> int:
    return int(client.hget(KEYS.cursor(source), "events") or 0)


def every_lake_file_reads(settings: Settings) -> None:
    for path in Path(str(settings.lake.root)).rglob("*.parquet"):
        if "_quarantine" not in path.parts:
            pq.read_metadata(path)  # raises on a torn or foreign file


def finish(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a clean stop) and the exit code; SIGKILL if it will not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_pid(proc.pid)
    return proc.wait()


# --- two of each, kill -9 ----------------------------------------------------------------------
def test_writers_of_every_kind_killed_at_random_moments_leave_every_event_once(
    settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    """A `write --loop`, repeated `write --once`, and a second loop, while an ingester
    runs; any of them kill -9'd at random moments and started again."""
    rng = random.Random(11)
    expected = events_file(tmp_path / "events.jsonl", 80_000)
    logs = tmp_path / "logs"
    logs.mkdir()
    events = str(tmp_path / "events.jsonl")
    ingest_args = ("ingest", "--source", "replay", "--file", events, "--rate", "20000")
    ingest = skybuffer(settings, *ingest_args, log=logs / "ingest.log")
    small = {"SKYBUFFER_WRITER__BATCH_EVENTS": "3000", "SKYBUFFER_LAKE__ROW_GROUP_ROWS": "3000"}
    kinds = {
        "loop": ("write", "--loop", "--interval", "0.2"),
        "once": ("write", "--once"),
    }
    running: list[subprocess.Popen[bytes]] = []
    kills = 0
    try:
        for step in range(18):
            kind = rng.choice(["loop", "once", "once"])
            running.append(skybuffer(settings, *kinds[kind], log=logs / f"{step}.log", **small))
            time.sleep(rng.uniform(0.2, 1.2))
            alive = [p for p in running if p.poll() is None]
            if alive and rng.random() < 0.7:
                victim = rng.choice(alive)
                victim.kill()  # kill -9
                victim.wait()
                kills += 1
        wait_for(lambda: ingest.poll() is not None, "the ingester to reach the end of the file")
        assert ingest.returncode == 0, (logs / "ingest.log").read_text()[-2000:]
    finally:
        for proc in running:
            finish(proc)
        finish(ingest)
    assert kills >= 5
    last = skybuffer(settings, "write", "--once", log=logs / "last.log")
    assert last.wait(timeout=DEADLINE) == 0, (logs / "last.log").read_text()[-2000:]
    assert confirmed(client) == 80_000
    assert buffered(client) == 0
    every_lake_file_reads(settings)
    assert lake_identities(Path(str(settings.lake.root))) == expected
    for type_ in TYPES:  # the killed writers' consumers are gone, the last one's is idle
        consumers = client.xinfo_consumers(KEYS.stream(type_), "datawriter")
        assert len(consumers) <= 1 and all(c["pending"] == 0 for c in consumers), type_


def test_a_second_ingester_on_one_cursor_is_refused_naming_the_first_and_adds_nothing(
    settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    expected = events_file(tmp_path / "events.jsonl", 15_000)
    args = ("ingest", "--source", "replay", "--file", str(tmp_path / "events.jsonl"))
    # 15 s of events: the second command (a new interpreter, seconds to start on a loaded
    # machine) must find the first still running.
    first = skybuffer(settings, *args, "--rate", "1000", log=tmp_path / "first.log")
    try:
        wait_for(lambda: confirmed(client) > 0, "the first ingester to write")
        second = run_cli(settings, *args)
        assert second.returncode == 3  # another process holds the role
        message = second.stderr.decode()
        assert "the ingester of source replay" in message and f"pid {first.pid}" in message
        assert "--wait" in message
        assert "Traceback" not in message
        status = run_cli(settings, "status", "--json")
        owners = orjson.loads(status.stdout)["owners"]
        assert f"pid {first.pid}" in owners["ingest:replay"]
        waiting = skybuffer(settings, *args, "--wait", log=tmp_path / "waiting.log")
        wait_for(lambda: first.poll() is not None, "the first ingester to finish")
        assert waiting.wait(timeout=DEADLINE) == 0, (tmp_path / "waiting.log").read_text()
    finally:
        finish(first)
    assert confirmed(client) == 15_000
    assert run_cli(settings, "write", "--once").returncode == 0
    assert lake_identities(Path(str(settings.lake.root))) == expected


def test_a_writer_stopped_past_its_lease_commits_nothing_after_another_took_over(
    settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    expected = buffer(client, generate(3, 100_000, T0), per_entry=500)
    one_batch = {"SKYBUFFER_WRITER__BATCH_EVENTS": "10000"}
    stale = skybuffer(settings, "write", "--once", log=tmp_path / "stale.log", **one_batch)
    try:
        lake = Path(str(settings.lake.root))
        wait_for(lambda: any(lake.rglob("*.parquet")), "the first writer to publish")
        stop_while_staging(stale, lake)
        stopped_at = time.monotonic()
        log_at_stop = (tmp_path / "stale.log").stat().st_size
        wait_for(lambda: not client.exists(KEYS.writer_lease), "its lease to expire")
        assert time.monotonic() - stopped_at >= 2.0
        fresh = run_cli(settings, "write", "--once", "--no-wait")
        assert fresh.returncode == 0, fresh.stderr.decode()[-2000:]
        assert buffered(client) == 0
        settled = lake_identities(lake)
        assert settled == expected
        stale.send_signal(signal.SIGCONT)
        stale.wait(timeout=DEADLINE)
    finally:
        if stale.poll() is None:
            stale.send_signal(signal.SIGCONT)
        finish(stale)
    after_stop = (tmp_path / "stale.log").read_bytes()[log_at_stop:].decode()
    assert "lost its lease skybuffer:lease:datawriter" in after_stop, after_stop[-3000:]
    assert "abandoned uncommitted" in after_stop
    committed_after = [int(n) for n in re.findall(r": (\d+) rows in \d+ files", after_stop)]
    assert not any(committed_after), f"the stale writer committed after SIGCONT: {after_stop}"
    every_lake_file_reads(settings)
    assert lake_identities(lake) == expected, "the stale writer changed the lake"
    assert buffered(client) == 0


def stop_while_staging(proc: subprocess.Popen[bytes], lake: Path) -> None:
    """SIGSTOP ``proc`` while it stages a batch (a temp file exists), not inside its few
    milliseconds under the lake's publish lock (stopped there, it would hold every other
    writer back, as designed): stop, look, resume and try again if it was elsewhere."""
    for _ in range(2000):
        proc.send_signal(signal.SIGSTOP)
        staging = any(lake.rglob(".tmp-*.inprogress"))
        fd = os.open(lake / PUBLISH_LOCK, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            if staging:
                return
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("never caught the writer staging a batch")


def test_a_second_run_on_one_data_dir_is_refused_and_the_first_keeps_serving(
    settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    args = ("run", "--source", "synthetic", "--rate", "500", "--no-writer", "--no-stack")
    first = skybuffer(settings, *args, log=tmp_path / "first.log")
    try:
        wait_for(lambda: confirmed(client, "synthetic") > 0, "the first run to ingest")
        second = run_cli(settings, *args)
        assert second.returncode == 3  # another process holds the role
        assert f"pid {first.pid}" in second.stderr.decode()
        assert client.ping()
        before = confirmed(client, "synthetic")
        wait_for(lambda: confirmed(client, "synthetic") > before, "the first run to go on")
        assert first.poll() is None
    finally:
        assert finish(first) == 0


# --- a Redis that forgets ---------------------------------------------------------------------
@pytest.mark.parametrize("source", ["jetstream", "replay"])
@pytest.mark.parametrize("how", ["aof cut back 1 s", "older snapshot restored"])
def test_redis_forgetting_mid_run_costs_a_replay_never_an_event(
    make_settings: Callable[..., Settings], source: str, how: str
) -> None:
    restore = how == "older snapshot restored"
    result = forget_once(make_settings(), source, 16_000, 5_000, 2.0 if restore else 1.0, restore)
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["lake_rows"] == 16_000
    assert result["forgotten"] > 0, "Redis must really have forgotten confirmed events"
    assert result["replayed"] > 0, "the lake must have held events Redis forgot"
    assert result["rewinds"] >= 1


# --- lake files ------------------------------------------------------------------------------
def test_an_unreadable_lake_file_is_skipped_by_readers_and_quarantined_by_the_writer(
    settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    expected = buffer(client, generate(5, 3000, T0))
    assert run_cli(settings, "write").returncode == 0
    good = sorted(Path(str(settings.lake.root)).rglob("likes/**/*.parquet"))[0]
    torn = good.with_name("part-1_0-99999999999999_0.parquet")
    torn.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a torn copy
    status = run_cli(settings, "status", "--json")
    assert status.returncode == 0, status.stderr.decode()
    assert str(torn) in status.stderr.decode()  # named in a warning
    query = run_cli(settings, "query", "SELECT count(*) AS n FROM likes", "--json")
    assert query.returncode == 0, query.stderr.decode()
    likes = sum(1 for key in expected if key[1] == "app.bsky.feed.like")
    assert orjson.loads(query.stdout) == [{"n": likes}]
    expected += buffer(client, generate(6, 3000, T0))  # more for the same partitions
    assert run_cli(settings, "write").returncode == 0
    assert not torn.exists()
    assert list(Path(str(settings.lake.root), "_quarantine").rglob(torn.name))
    every_lake_file_reads(settings)
    assert lake_identities(Path(str(settings.lake.root))) == expected
