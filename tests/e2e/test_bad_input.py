"""Bad bytes and floods of them, on real processes: each bad event is one dead letter with
its reason, never its neighbours; dead letters can be listed, shown, exported and
replayed exactly once; and a flood of them never pushes Redis past maxmemory.

Also covers: skybuffer.buffer.deadletter, skybuffer.pipeline.deadletters,
skybuffer.cli.deadletter (through the behaviour above).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from skybuffer.buffer.codec import Codec
from skybuffer.buffer.deadletter import DeadLetter, DeadLetterStore
from skybuffer.buffer.producer import Encoder, Producer
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import Keys
from skybuffer.events import identity
from skybuffer.pipeline.datawriter import drain_once
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate
from tests.e2e.test_operators import env_of, run_cli
from tests.pipeline.test_datawriter import assert_drained, events_by_type_lists, lake_identities

KEYS = Keys()
T0 = 1_779_717_600_000_000
Identity = tuple[str, str, str, int]


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_server: ManagedRedis) -> Settings:
    return make_settings()


def bad_lines(valid: list[bytes]) -> list[tuple[bytes, str]]:
    """Lines a broken client or a damaged file could hold, each with the reason expected."""
    bad: list[tuple[bytes, str]] = []
    for i, line in enumerate(valid[:300]):
        kind = i % 3
        if kind == 0:  # a valid event with a field holding bytes that are not UTF-8
            bad.append((line[:-1] + b',"x":"\xc3\x28\xa0\xa1"}', "invalid_utf8"))
        elif kind == 1:
            half = line[: len(line) // 2].decode("utf-8", "ignore").encode()
            bad.append((half, "not_json"))
        else:
            bad.append((b'{"did":"nobody","time_us":1,"kind":"commit"}', "bad_did"))
    return bad


def cli_json(settings: Settings, *args: str) -> dict:
    done = run_cli(settings, *args, "--json")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_file_of_valid_and_bad_lines_puts_every_valid_event_in_the_lake_once(
    settings: Settings, tmp_path: Path, partitions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYBUFFER_REDIS__PARTITIONS", str(partitions))
    valid = generate(11, 20_000, T0)
    bad = bad_lines(valid)
    mixed = list(valid)
    for n, (line, _) in enumerate(bad):  # spread them through the file
        mixed.insert(n * 60 + 7, line)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(mixed) + b"\n")
    done = run_cli(settings, "ingest", "--source", "replay", "--file", str(path))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert run_cli(settings, "write", "--once").returncode == 0
    assert lake_identities(settings) == Counter(identity(orjson.loads(v)) for v in valid)
    expected = Counter(reason for _, reason in bad)
    listed = cli_json(settings, "deadletter", "list", "--limit", "0")
    assert {r: c["events"] for r, c in listed["summary"]["by_reason"].items()} == expected
    status = cli_json(settings, "status")
    assert status["deadletter_events"] == dict(sorted(expected.items()))
    exported = tmp_path / "letters.jsonl"
    done = run_cli(
        settings, "deadletter", "export", "--reason", "invalid_utf8", "-o", str(exported)
    )
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(records) == expected["invalid_utf8"]
    assert all(r["event"] is None and r["raw_base64"] for r in records)  # bytes kept whole
    shown = cli_json(settings, "deadletter", "show", records[0]["letter"])
    assert shown["reason"] == "invalid_utf8" and shown["records"][0]["raw_base64"]
    if partitions > 1:  # letters named by their partition, from every partition
        homes = {letter["id"].split("/")[0] for letter in listed["letters"]}
        assert homes == {"p0", "p1", "p2"}
        again = cli_json(settings, "deadletter", "replay", "--dry-run", "--id", shown["id"])
        assert again["letters"] == 1 and again["requeued_events"] == 0


def too_large_letters(client: redis.Redis, lines: list[bytes]) -> None:
    """Dead letters an ingester with a too small ``ingest.max_event_bytes`` would write."""
    producer, encoder = Producer(client, KEYS, "test"), Encoder(max_event_bytes=10_000_000)
    seq = producer.checkpoint().seq + 1
    batch = encoder.encode(seq, f"test:{seq}", [])
    batch.deadletters = [DeadLetter("too_large", line, "over an old limit") for line in lines]
    producer.write(batch)


def test_replay_after_a_fix_puts_each_event_in_the_lake_exactly_once(
    settings: Settings, client: redis.Redis
) -> None:
    lines = generate(12, 3000, T0)
    too_large_letters(client, lines[:2000])
    # A bundle an older DataWriter wrote for a whole entry: two good events, one bad.
    still_bad = lines[2000][:-1] + b',"x":"\xff"}'
    fields = Codec().encode([lines[2001], still_bad, lines[2002]])
    old = DeadLetter("undecodable_entry", fields[b"d"], "old", b"1", 3).args("datawriter")
    names = ["reason", "source", "raw", "detail", "codec", "events"]
    client.xadd(KEYS.deadletter, dict(zip(names, old, strict=True)))  # type: ignore[arg-type]
    client.hincrby(KEYS.deadletter_counts, "undecodable_entry", 3)
    replays = [
        subprocess.Popen(
            [sys.executable, "-m", "skybuffer", "deadletter", "replay", "--json"],
            env=env_of(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]  # two at once: each letter is replayed by one of them
    results = []
    for process in replays:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out))
    assert sum(r["requeued_events"] for r in results) == 2002
    assert drain_once(settings).ok
    expected = Counter(identity(orjson.loads(v)) for v in [*lines[:2000], lines[2001], lines[2002]])
    assert lake_identities(settings) == expected
    left = list(DeadLetterStore(client, KEYS).scan())
    assert [(d.reason, d.events, d.raw) for d in left] == [("invalid_utf8", 1, still_bad)]
    assert DeadLetterStore(client, KEYS).counts() == {"invalid_utf8": 1}
    again = cli_json(settings, "deadletter", "replay")
    assert again["requeued_events"] == 0 and again["still_rejected_by_reason"] == {
        "invalid_utf8": 1
    }
    assert_drained(client, settings)


def test_a_flood_of_bad_events_never_pushes_redis_past_maxmemory(
    make_settings: Callable[..., Settings], start_redis: Callable[..., ManagedRedis]
) -> None:
    limit = 16 * 1024 * 1024
    server = start_redis(maxmemory=str(limit))
    settings = make_settings()
    client = server.client()
    # Entries an older ingester (which did not check UTF-8) wrote: every event is bad.
    grouped = {
        type_: [line[:-1] + b',"x":"\xc3\x28"}' for line in group]
        for type_, group in events_by_type_lists(generate(13, 20_000, T0)).items()
    }
    added = 0
    entries = {type_: Codec().encode(group) for type_, group in grouped.items()}
    largest = max(sum(len(v) for v in fields.values()) for fields in entries.values())
    while True:
        for type_, group in grouped.items():
            try:
                client.xadd(KEYS.stream(type_), entries[type_])  # type: ignore[arg-type]
            except redis.exceptions.OutOfMemoryError:
                break
            client.hincrby(KEYS.event_counts, type_, len(group))
            added += len(group)
        else:
            continue
        break
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        # What Redis holds, less the replies waiting in client output buffers (the
        # writer's reads of whole entries: on a loaded machine they wait longer to be
        # read, and they are not what dead letters add).
        while not stop.is_set():
            memory = client.info("memory")
            held = int(memory["used_memory"]) - int(memory.get("mem_clients_normal", 0))
            peak[0] = max(peak[0], held)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = drain_once(settings)
    finally:
        stop.set()
        sampler.join()
    assert result.ok
    assert sum(DeadLetterStore(client, KEYS).counts().values()) == added  # every one kept
    # A whole-entry letter is copied from its entry inside the commit script, so for a
    # moment (until Lua collects the copy) one entry's bytes exist twice: the bound.
    bound = limit * 1.05 + largest
    assert peak[0] <= bound, f"peak {peak[0]:,} bytes; maxmemory {limit:,}, entry {largest:,}"
    assert_drained(client, settings)
