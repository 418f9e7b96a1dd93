"""Full disks degrade, they never crash or lose: Redis's AOF disk, the spool's disk, a
spool at its size limit, the lake's disk, and an AOF that Redis loads truncated.

A full disk without root: a process's soft RLIMIT_FSIZE. A write past it fails with
EFBIG where a full disk fails with ENOSPC (a short write, which Redis reports as "No space
left on device"); Redis reacts to both the same way (MISCONF, ``aof_last_write_status:err``,
a retry every second), and so does the spool's writer (an OSError). The limit is lowered
and raised again with prlimit(2) on our own processes, which needs no privilege; raising
it is "space is back". SIGXFSZ stays ignored (Python ignores it, and the managed
redis-server inherits that), so the limit makes writes fail instead of killing.

Also covers: skybuffer.pipeline.outage (through the behaviour above).
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from skybuffer.buffer.aof import AOF_DIR
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES, Keys
from skybuffer.errors import persist_error
from skybuffer.events import identity
from skybuffer.metrics import REGISTRY
from skybuffer.ops.chaos.pipeline_run import lake_identities
from skybuffer.pipeline.datawriter import drain_once
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.runner import build_ingester
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate
from tests.conftest import buffered_events
from tests.e2e.test_operators import events_file, run_cli, wait_for
from tests.pipeline.test_datawriter import T0, buffer
from tests.pipeline.test_ingest import _all_events, _expected_for

UNLIMITED = resource.RLIM_INFINITY
INGEST_LOG = "skybuffer.pipeline.ingest"


# --- helpers ---------------------------------------------------------------------------------
def limit_file_size(pid: int, size: int | None) -> None:
    """Files written by ``pid`` may not grow past ``size`` bytes (None: no limit)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (UNLIMITED if size is None else size, UNLIMITED))


def incr_aof(server: ManagedRedis) -> Path:
    [path] = (server.directory / AOF_DIR).glob("*.incr.aof")
    return path


def paused(reason: str) -> bool:
    value = REGISTRY.get_sample_value("skybuffer_ingest_source_paused", {"reason": reason})
    return value == 1.0


def buffered_identities(client: redis.Redis) -> Counter[tuple[object, ...]]:
    found: Counter[tuple[object, ...]] = Counter()
    for events in buffered_events(client).values():
        found.update(identity(orjson.loads(e)) for e in events)
    return found


def start_ingest(ingester: Ingester) -> threading.Thread:
    thread = threading.Thread(target=ingester.run, name="test-ingest", daemon=True)
    thread.start()
    return thread


def said(done: object) -> str:
    out = getattr(done, "stdout", b"") + getattr(done, "stderr", b"")
    return out.decode(errors="replace")


def assert_one_clear_line(text: str) -> None:
    assert "Traceback" not in text, text
    assert "Redis cannot write its AOF" in text, text
    assert "free space" in text, text


@pytest.fixture
def ingest_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger=INGEST_LOG):
        yield caplog


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == INGEST_LOG]


# --- Redis's AOF disk ---------------------------------------------------------------------------
def test_aof_disk_full_pauses_ingest_every_command_explains_and_all_resumes_by_itself(
    redis_server: ManagedRedis,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    ingest_log: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        ingest={"batch_events": 500, "backoff_max_seconds": 0.3, "outage_log_seconds": 0.5}
    )
    expected = events_file(tmp_path / "events.jsonl", 40_000)
    client = redis_server.client()
    client.set("skybuffer:test:padding", "x" * 20_000)  # the AOF outgrows Redis's log
    wait_for(lambda: incr_aof(redis_server).stat().st_size > 20_000, "the AOF to be written")
    pid = redis_server.pid()
    assert pid is not None
    limit_file_size(pid, incr_aof(redis_server).stat().st_size + 30_000)

    ingester = build_ingester(settings, "replay", file=tmp_path / "events.jsonl")
    thread = start_ingest(ingester)
    wait_for(lambda: paused("redis_cannot_persist"), "ingest to pause on MISCONF")
    info = redis_server.client("admin").info("persistence")
    assert info["aof_last_write_status"] == "err"
    held = ingester.stats.events
    assert held < 40_000

    status = run_cli(settings, "status")
    assert status.returncode == 0, said(status)
    assert_one_clear_line(said(status))
    redis_status = run_cli(settings, "redis", "status")
    assert redis_status.returncode == 0, said(redis_status)
    assert_one_clear_line(said(redis_status))
    as_json = orjson.loads(run_cli(settings, "redis", "status", "--json").stdout)
    assert as_json["running"] is True and as_json["aof_writing"] is False
    assert orjson.loads(run_cli(settings, "status", "--json").stdout)["aof_writing"] is False
    audit = run_cli(settings, "audit", "--json")
    assert "Traceback" not in said(audit), said(audit)
    assert "free disk space" in said(audit), said(audit)  # its AOF check FAILs, naming it
    write_once = run_cli(settings, "write", "--once")
    assert write_once.returncode == 4, said(write_once)
    assert_one_clear_line(said(write_once))
    assert len(said(write_once).strip().splitlines()) <= 3, said(write_once)
    assert ingester.stats.events == held  # nothing more was taken meanwhile
    assert thread.is_alive()

    limit_file_size(pid, None)  # space is back
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert buffered_identities(client) == expected
    lines = outage_lines(ingest_log)
    assert any(line.startswith("Redis cannot write its AOF since") for line in lines), lines
    assert any("the source is paused (Redis cannot write its AOF)" in line for line in lines)
    assert any(line.startswith("Redis takes source replay's batches again") for line in lines)
    assert not any("\\x" in line or "b'" in line for line in lines)

    written = run_cli(settings, "write", "--once")
    assert written.returncode == 0, said(written)
    assert lake_identities(Path(str(settings.lake.root))) == expected


def test_redis_stop_stops_a_redis_that_cannot_write_its_aof(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    client = redis_server.client()
    client.set("skybuffer:test:kept", "fsync'd before the disk filled")
    client.set("skybuffer:test:padding", "x" * 20_000)
    wait_for(lambda: incr_aof(redis_server).stat().st_size > 20_000, "the AOF to be written")
    time.sleep(1.5)  # past appendfsync everysec: what is written now is fsync'd
    pid = redis_server.pid()
    assert pid is not None
    limit_file_size(pid, incr_aof(redis_server).stat().st_size + 10)
    client.set("skybuffer:test:lost", "y" * 1000)  # accepted into Redis's AOF buffer
    wait_for(
        lambda: redis_server.client("admin").info("persistence")["aof_last_write_status"] == "err",
        "Redis to fail its AOF write",
    )
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        client.ping()
    pipe = client.pipeline(transaction=True)
    pipe.xadd("skybuffer:test:stream", {"raw": b"EVENT-BYTES-\xc3\x28"})
    with pytest.raises(redis.ResponseError) as refused:
        pipe.execute()
    assert "EVENT-BYTES" in str(refused.value)  # redis-py quotes a pipeline's arguments
    mapped = persist_error(str(refused.value))
    assert mapped is not None and "EVENT-BYTES" not in str(mapped)
    # A short write: Redis says "No space left on device" (ENOSPC) though the limit is EFBIG.
    assert str(mapped).startswith("Redis cannot write its AOF (No space left on device)")

    stopped = run_cli(settings, "redis", "stop")
    assert stopped.returncode == 0, said(stopped)
    assert "redis-server stopped" in said(stopped)
    assert "cannot write its AOF" in said(stopped) and "Traceback" not in said(stopped)
    assert redis_server.pid() is None

    redis_server.start()
    assert redis_server.client().get("skybuffer:test:kept") == b"fsync'd before the disk filled"


def test_an_ingester_started_while_redis_cannot_write_its_aof_waits_and_then_goes_on(
    redis_server: ManagedRedis,
    make_settings: Callable[..., Settings],
    ingest_log: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(ingest={"backoff_max_seconds": 0.3})
    client = redis_server.client()
    client.set("skybuffer:test:padding", "x" * 20_000)
    wait_for(lambda: incr_aof(redis_server).stat().st_size > 20_000, "the AOF to be written")
    pid = redis_server.pid()
    assert pid is not None
    limit_file_size(pid, incr_aof(redis_server).stat().st_size + 10)
    client.set("skybuffer:test:more", "y" * 1000)
    wait_for(
        lambda: redis_server.client("admin").info("persistence")["aof_last_write_status"] == "err",
        "Redis to fail its AOF write",
    )
    ingester = build_ingester(settings, "synthetic", count=3_000, rate=0)
    thread = start_ingest(ingester)
    wait_for(
        lambda: any(
            line.startswith("Redis cannot write its AOF since") for line in outage_lines(ingest_log)
        ),
        "the ingester to report the outage",
    )
    assert thread.is_alive() and ingester.stats.events == 0
    limit_file_size(pid, None)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert Counter(_all_events(client)) == Counter(_expected_for(client, 3_000, 1_500))


# --- the spool ---------------------------------------------------------------------------------
def test_a_spool_at_its_limit_pauses_the_source_and_loses_nothing(
    redis_server: ManagedRedis,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    ingest_log: pytest.LogCaptureFixture,
) -> None:
    limit = 500_000
    settings = make_settings(
        ingest={
            "batch_events": 500,
            "memory_queue_batches": 2,
            "spool_max_bytes": limit,
            "backoff_max_seconds": 0.3,
            "outage_log_seconds": 0.5,
        }
    )
    ingester = build_ingester(settings, "synthetic", count=40_000, rate=10_000)
    thread = start_ingest(ingester)
    wait_for(lambda: ingester.stats.events >= 2_000, "the first batches to land")
    redis_server.stop()
    wait_for(lambda: paused("spool_full"), "the source to pause at the spool limit")
    spooled = ingester.spool.size()
    assert 0 < spooled <= limit
    wait_for(
        lambda: any(line.startswith("Redis unreachable for") for line in outage_lines(ingest_log)),
        "an outage line while it lasts",
    )
    assert ingester.spool.size() == spooled  # paused: nothing more read, nothing grew

    redis_server.start()
    thread.join(timeout=300)
    assert not thread.is_alive()
    client = redis_server.client()
    assert Counter(_all_events(client)) == Counter(_expected_for(client, 40_000, 10_000))
    assert ingester.spool.size() == 0
    lines = outage_lines(ingest_log)
    assert any(line.startswith("Redis unreachable since") for line in lines), lines
    assert any("the spool is at ingest.spool_max_bytes" in line for line in lines), lines
    ended = [line for line in lines if line.startswith("Redis takes source synthetic's")]
    assert ended and "spooled to" in ended[0] and "replayed in order" in ended[0], lines


def test_a_spool_disk_that_refuses_writes_pauses_the_source_and_loses_nothing(
    redis_server: ManagedRedis,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    ingest_log: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        ingest={"batch_events": 500, "memory_queue_batches": 2, "backoff_max_seconds": 0.3}
    )
    ingester = build_ingester(settings, "synthetic", count=40_000, rate=10_000)
    thread = start_ingest(ingester)
    wait_for(lambda: ingester.stats.events >= 2_000, "the first batches to land")
    ceiling = 350_000  # this test process's files: only the spool grows meanwhile
    limit_file_size(0, ceiling)
    try:
        redis_server.stop()
        wait_for(lambda: paused("spool_error"), "the source to pause on the spool's disk")
        assert 0 < ingester.spool.size() <= ceiling
        assert list(ingester.spool.read())  # cut back: no torn record hides the rest
    finally:
        limit_file_size(0, None)
    assert thread.is_alive()
    redis_server.start()
    thread.join(timeout=300)
    assert not thread.is_alive()
    client = redis_server.client()
    assert Counter(_all_events(client)) == Counter(_expected_for(client, 40_000, 10_000))
    assert any("Cannot write the spool" in line for line in outage_lines(ingest_log))


# --- a truncated AOF ---------------------------------------------------------------------------
def test_redis_start_and_status_report_a_truncated_aof_with_the_bytes_dropped(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    client = redis_server.client()
    for i in range(50):
        client.xadd("skybuffer:test:stream", {"n": i})
    redis_server.stop()
    aof = incr_aof(redis_server)
    whole = aof.stat().st_size
    with open(aof, "r+b") as handle:
        handle.truncate(whole - 7)

    started = run_cli(settings, "redis", "start")
    assert started.returncode == 0, said(started)
    text = said(started)
    assert "loaded a truncated AOF" in text, text
    kept = aof.stat().st_size  # Redis cut it back to the last whole write
    assert kept < whole - 7
    assert f"{whole - 7 - kept:,} bytes" in text, text
    assert redis_server.client().xlen("skybuffer:test:stream") == 49

    status = run_cli(settings, "status", "--json")
    assert status.returncode == 0, said(status)
    [warning] = orjson.loads(status.stdout)["warnings"]
    assert "truncated AOF" in warning and f"{whole - 7 - kept:,} bytes" in warning


# --- the lake's disk ---------------------------------------------------------------------------
def test_a_full_lake_disk_acknowledges_nothing_and_the_next_run_writes_every_event_once(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    client = redis_server.client()
    expected = buffer(client, generate(5, 20_000, T0))
    keys = Keys()
    limit_file_size(0, 20_000)  # this process writes the lake files: none fits
    try:
        result = drain_once(settings)
    finally:
        limit_file_size(0, None)
    assert not result.ok and result.errors
    assert all("nothing of this batch was acknowledged" in e for e in result.errors.values())
    for type_ in result.errors:
        assert client.xlen(keys.stream(type_)) > 0, type_
    assert drain_once(settings).ok  # space is back
    assert lake_identities(Path(str(settings.lake.root))) == expected
    assert all(client.xlen(keys.stream(t)) == 0 for t in TYPES)
