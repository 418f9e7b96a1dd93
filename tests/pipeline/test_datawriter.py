"""The DataWriter drains the buffer into the lake exactly once, through crashes and faults.

Real redis-server, real files, and every check of the lake goes through DuckDB.

Also covers: skybuffer.pipeline.drain_result, skybuffer.pipeline.faults (through the behaviour
above).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import pytest
import redis
from typer.testing import CliRunner

from skybuffer.buffer.codec import Codec, Decoder
from skybuffer.buffer.deadletter import DeadLetterStore
from skybuffer.buffer.producer import Encoder, Producer
from skybuffer.buffer.server import ManagedRedis
from skybuffer.cli import app
from skybuffer.constants import COLLECTION_TYPES, TYPES, Keys
from skybuffer.errors import LeaseHeld
from skybuffer.events import classify, identity
from skybuffer.lake.query import run_query
from skybuffer.lake.schema import rebuild_event
from skybuffer.pipeline.datawriter import DataWriter, drain_once
from skybuffer.pipeline.faults import FAULT_EXIT_CODE
from skybuffer.pipeline.runner import build_ingester
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate

KEYS = Keys()
HOUR = 3_600_000_000
T0 = 1_779_717_600_000_000  # 2026-05-25T14:00:00Z
Identity = tuple[str, str, str, int]


# --- helpers ---------------------------------------------------------------------------------
def buffer(client: redis.Redis, lines: list[bytes], per_entry: int = 200) -> Counter[Identity]:
    """Buffer ``lines`` the way the ingester does; returns what the lake must end up with."""
    producer, encoder = Producer(client, KEYS, "test"), Encoder(1_000_000)
    seq = producer.checkpoint().seq
    for i in range(0, len(lines), per_entry):
        seq += 1
        producer.write(encoder.encode(seq, f"test:{seq}", lines[i : i + per_entry]))
    return Counter(identity(orjson.loads(line)) for line in lines)


def spread(lines: list[bytes], hours: int) -> list[bytes]:
    """The events again, their time_us spread over ``hours`` consecutive hours."""
    out = []
    for i, line in enumerate(lines):
        event = orjson.loads(line)
        event["time_us"] = T0 + (i % hours) * HOUR + i
        out.append(orjson.dumps(event))
    return out


def lake_identities(settings: Settings) -> Counter[Identity]:
    union = " UNION ALL ".join(
        f"SELECT did, coalesce(collection, kind), coalesce(rkey, ''), time_us FROM {t}"
        for t in TYPES
    )
    return Counter(tuple(row) for row in run_query(settings.lake, union).rows)  # type: ignore[misc]


def assert_drained(client: redis.Redis, settings: Settings) -> None:
    """Buffer empty and counted empty, nothing pending, no temp file left in the lake."""
    for type_ in TYPES:
        stream = KEYS.stream(type_)
        assert client.xlen(stream) == 0, type_
        if client.exists(stream) and client.xinfo_groups(stream):
            assert client.xpending(stream, "datawriter")["pending"] == 0, type_
    assert all(int(v) == 0 for v in client.hgetall(KEYS.event_counts).values())
    assert list(Path(str(settings.lake.root)).rglob(".tmp-*")) == []


def writer_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SKYBUFFER_DATA_DIR": str(settings.data_dir),
        "SKYBUFFER_REDIS__PORT": str(settings.redis.port),
        "SKYBUFFER_METRICS__INGEST_PORT": "0",
        "SKYBUFFER_METRICS__WRITER_PORT": "0",
        **extra,
    }


def run_writer(settings: Settings, **env: str) -> tuple[int, dict]:
    """`python -m skybuffer write --once --json` as a child: exit code and its report."""
    command = [sys.executable, "-m", "skybuffer", "write", "--once", "--json"]
    done = subprocess.run(command, env=writer_env(settings, **env), capture_output=True)
    if done.returncode not in (0, FAULT_EXIT_CODE):
        raise AssertionError(done.stderr.decode())
    return done.returncode, json.loads(done.stdout) if done.returncode == 0 else {}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_server: ManagedRedis) -> Settings:
    return make_settings()


def writer(settings: Settings, **overrides: object) -> DataWriter:
    parts = settings.model_copy(update={"writer": settings.writer.model_copy(update=overrides)})
    return DataWriter.from_settings(parts)


def events_by_type_lists(lines: Iterable[bytes]) -> dict[str, list[bytes]]:
    """The lines by type, in order (what one ingest batch makes its entries of)."""
    grouped: dict[str, list[bytes]] = {}
    for line in lines:
        grouped.setdefault(classify_type(line), []).append(line)
    return grouped


def classify_type(line: bytes) -> str:
    commit = orjson.loads(line).get("commit") or {}
    return COLLECTION_TYPES.get(commit.get("collection", ""), "other")


def events_by_type(lines: Iterable[bytes]) -> dict[str, Counter[bytes]]:
    grouped: dict[str, Counter[bytes]] = {t: Counter() for t in TYPES}
    for line in lines:
        normal = orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)
        grouped[classify(line, 1_000_000)][normal] += 1
    return grouped


# --- the round trip ----------------------------------------------------------------------------
def test_every_event_lands_once_in_its_type_hour_and_columns_and_rebuilds_exactly(
    settings: Settings, client: redis.Redis, golden_lines: list[bytes]
) -> None:
    lines = golden_lines + generate(11, 20_000, T0 - 5_000_000)  # crosses 14:00 UTC
    expected = buffer(client, lines, per_entry=700)
    result = drain_once(settings)
    assert result.ok and result.rows == len(lines)
    assert lake_identities(settings) == expected
    wanted = events_by_type(lines)
    for type_ in TYPES:
        misplaced = run_query(
            settings.lake,
            f"""SELECT count(*) FROM {type_} WHERE
            (year, month, day, hour) != (year(event_time), month(event_time),
                                         day(event_time), hour(event_time))""",
        )
        assert misplaced.rows == [(0,)], type_
        rows = run_query(settings.lake, f"SELECT * EXCLUDE (year, month, day, hour) FROM {type_}")
        rebuilt = Counter(
            orjson.dumps(rebuild_event(r), option=orjson.OPT_SORT_KEYS) for r in rows.records()
        )
        assert rebuilt == wanted[type_], type_
    assert result.types["likes"].partitions == [
        "likes/year=2026/month=05/day=25/hour=13", "likes/year=2026/month=05/day=25/hour=14",
    ]  # fmt: skip
    assert_drained(client, settings)


# --- exactly once under faults ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "rerun"),
    [
        ("after_first_file", "same writer"),
        ("before_ack", "same writer"),
        ("before_trim", "same writer"),
        ("after_first_file", "another writer, smaller batches"),
        ("before_ack", "another writer, smaller batches"),
    ],
)
def test_a_writer_killed_at_any_step_leaves_every_event_in_the_lake_exactly_once(
    settings: Settings, client: redis.Redis, fault: str, rerun: str
) -> None:
    expected = buffer(client, spread(generate(5, 6000, T0), hours=3), per_entry=400)
    buffered = sum(int(v) for v in client.hgetall(KEYS.event_counts).values())
    code, _ = run_writer(settings, SKYBUFFER_WRITER__FAULT=fault)
    assert code == FAULT_EXIT_CODE
    left = sum(int(v) for v in client.hgetall(KEYS.event_counts).values())
    if fault == "before_trim":
        assert left < buffered  # the first batch was committed before the crash
    else:
        assert left == buffered and any(Path(str(settings.lake.root)).rglob("*.parquet"))
    if rerun == "same writer":
        fresh = writer(settings)
    else:
        # Another process's writer: it takes the dead one's pending entries over at once
        # (the lease says nobody else writes), in smaller batches than they were read in.
        fresh = writer(settings, consumer="writer-2", batch_events=700)
    assert drain_once(fresh).ok
    assert lake_identities(settings) == expected
    assert_drained(client, settings)


def test_a_second_writer_waits_for_the_first_and_the_lake_holds_every_event_once(
    settings: Settings, client: redis.Redis
) -> None:
    expected = buffer(client, generate(3, 40_000, T0), per_entry=100)
    start, results = threading.Barrier(2), {}

    def run(name: str) -> None:
        one = writer(settings, consumer=name, batch_events=1000)
        start.wait()
        results[name] = drain_once(one)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("writer-a", "writer-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.ok for r in results.values())
    assert sorted(r.rows for r in results.values()) == [0, 40_000], "one drained, one waited"
    assert lake_identities(settings) == expected
    assert_drained(client, settings)


def test_a_second_writer_told_not_to_wait_is_refused_naming_the_owner(
    settings: Settings, client: redis.Redis
) -> None:
    owner = writer(settings, consumer="the-owner")
    with owner.owning(wait=False):
        with pytest.raises(LeaseHeld) as caught:
            drain_once(writer(settings, consumer="second"), wait=False)
    assert "DataWriter the-owner" in str(caught.value)
    assert f"pid {os.getpid()}" in str(caught.value)
    owner.close()


# --- memory ------------------------------------------------------------------------------------
WRITER_RSS_BOUND = 512 * 2**20
"""Peak RSS (VmHWM) of a writer process with 32k-event batches and row groups: measured
386 MB here, ~500 MB on a 2.7M-event backlog (bounded by the chunk, not the backlog)."""


def test_redis_memory_falls_after_a_drain_and_the_writer_stays_within_its_bound(
    settings: Settings, client: redis.Redis, redis_server: ManagedRedis
) -> None:
    admin = redis_server.client("admin")
    build_ingester(settings, "synthetic", count=200_000, rate=0).run()
    before = int(admin.info("memory")["used_memory"])
    code, report = run_writer(
        settings, SKYBUFFER_WRITER__BATCH_EVENTS="32768", SKYBUFFER_LAKE__ROW_GROUP_ROWS="32768"
    )
    after = int(admin.info("memory")["used_memory"])
    assert code == 0
    assert before > 20 * 2**20 and after < before / 10  # XDEL of whole nodes frees them
    assert report["peak_rss_bytes"] < WRITER_RSS_BOUND
    assert sum(lake_identities(settings).values()) == 200_000


# --- bad input and failures ------------------------------------------------------------------
def test_undecodable_entries_and_bad_lines_go_to_dead_letters_and_the_rest_to_the_lake(
    settings: Settings, client: redis.Redis, golden_lines: list[bytes]
) -> None:
    like = golden_lines[0]
    stream = KEYS.stream("likes")
    buffer(client, [like])
    poison = client.xadd(stream, {b"v": b"1", b"n": b"3", b"d": b"not zstd at all"}).decode()
    client.xadd(stream, Codec().encode([like, b"{broken", like]))  # type: ignore[arg-type]
    not_utf8 = like.replace(b"did:plc:", b"did:\xff:")
    client.xadd(stream, Codec().encode([like, not_utf8, like]))  # type: ignore[arg-type]
    client.xadd(stream, Codec().encode([like]))  # type: ignore[arg-type]
    client.hincrby(KEYS.event_counts, "likes", 10)
    result = drain_once(settings)
    assert result.ok and result.types["likes"].rows == 6
    assert result.types["likes"].deadletters == 5  # 3 in the poison entry, 2 bad lines
    letters = list(DeadLetterStore(client, KEYS).scan())
    assert [(d.reason, d.events) for d in letters] == [
        ("undecodable_entry", 3),
        ("not_json", 1),
        ("invalid_utf8", 1),
    ]
    assert poison in letters[0].detail and letters[0].raw == b"not zstd at all"
    decoder = Decoder()
    assert letters[1].expand(decoder) == [b"{broken"] and "events 1 of entry" in letters[1].detail
    assert letters[2].expand(decoder) == [not_utf8]  # the bytes as buffered: nothing is lost
    assert DeadLetterStore(client, KEYS).counts() == {
        "invalid_utf8": 1,
        "not_json": 1,
        "undecodable_entry": 3,
    }
    assert_drained(client, settings)


def test_one_bad_byte_costs_one_event_not_its_entry(
    settings: Settings, client: redis.Redis
) -> None:
    """Entries written by an ingester that did not check UTF-8 (an older version)."""
    lines = generate(3, 5000, T0)
    expected = Counter(identity(orjson.loads(line)) for line in lines)
    grouped = events_by_type_lists(lines)
    likes = grouped["likes"]
    bad = [likes[i][:-1] + b',"x":"\xc3\x28\xa0\xa1"}' for i in (0, len(likes) // 2, -1)]
    grouped["likes"] = [
        bad[0],
        *likes[: len(likes) // 2],
        bad[1],
        *likes[len(likes) // 2 :],
        bad[2],
    ]
    for type_, group in grouped.items():
        client.xadd(KEYS.stream(type_), Codec().encode(group))  # type: ignore[arg-type]
        client.hincrby(KEYS.event_counts, type_, len(group))
    result = drain_once(settings)
    assert result.ok
    assert lake_identities(settings) == expected  # every valid neighbour reached the lake
    letters = list(DeadLetterStore(client, KEYS).scan())
    assert [(d.reason, d.events) for d in letters] == [("invalid_utf8", 3)]
    assert letters[0].expand(Decoder()) == bad
    assert_drained(client, settings)


def test_a_failing_lake_write_acknowledges_nothing_names_path_and_cause_and_is_retried(
    settings: Settings, client: redis.Redis
) -> None:
    expected = buffer(client, generate(2, 3000, T0))
    blocker = Path(str(settings.lake.root)) / "likes"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the likes directory should be")  # fails for root too
    likes_before = client.hget(KEYS.event_counts, "likes")
    result = drain_once(settings)
    assert not result.ok and list(result.errors) == ["likes"]
    assert f"{blocker} exists and is not a directory" in result.errors["likes"]
    assert result.types["posts"].rows > 0  # the other types went on
    assert client.hget(KEYS.event_counts, "likes") == likes_before
    assert client.xlen(KEYS.stream("likes")) > 0
    blocker.unlink()
    assert drain_once(settings).ok
    assert lake_identities(settings) == expected
    assert_drained(client, settings)


def test_a_run_out_of_budget_stops_taking_batches_and_leaves_the_rest(
    settings: Settings, client: redis.Redis
) -> None:
    buffer(client, generate(4, 2000, T0))
    result = drain_once(writer(settings, budget_seconds=0.0))
    assert result.rows == 0 and all(r.budget_exhausted for r in result.types.values())
    assert client.xlen(KEYS.stream("likes")) > 0


# --- the commands ------------------------------------------------------------------------------
def test_write_once_and_query_work_from_the_command_line(
    settings: Settings, client: redis.Redis, golden_lines: list[bytes]
) -> None:
    buffer(client, golden_lines)
    env = writer_env(settings)
    runner = CliRunner()
    written = runner.invoke(app, ["write", "--once", "--json"], env=env)
    assert written.exit_code == 0, written.output
    assert json.loads(written.stdout)["rows"] == len(golden_lines)
    sql = "SELECT did, text FROM posts"
    queried = runner.invoke(app, ["query", sql, "--json"], env=env)
    assert json.loads(queried.stdout) == [
        {"did": "did:plc:q235v55g5unth4zjjdpacfdr", "text": "Try RSV for a good time !!"}
    ]
    as_csv = runner.invoke(app, ["query", "SELECT count(*) AS n FROM other", "--csv"], env=env)
    assert as_csv.stdout == "n\n5\n"
    status = runner.invoke(app, ["status", "--json"], env=env)
    lake = json.loads(status.stdout)["lake"]
    assert lake["rows"] == len(golden_lines) and lake["types"]["posts"]["files"] == 1
