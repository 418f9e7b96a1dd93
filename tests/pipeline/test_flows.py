"""The Prefect flow drains the buffer into the lake, retries a failing task, and refuses
to run twice at once (real redis-server, Prefect's test harness server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from skybuffer.buffer.lease import Lease
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import Keys
from skybuffer.observability.writer_stats import read_stats
from skybuffer.pipeline.flows import datawriter_flow
from skybuffer.pipeline.runner import build_ingester
from skybuffer.settings import Settings

KEYS = Keys()


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def buffered(
    redis_server: ManagedRedis,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """30,000 realistic events in the buffer; the flow reads the same settings from env."""
    settings = make_settings(writer={"budget_seconds": 120})
    monkeypatch.setenv("SKYBUFFER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SKYBUFFER_REDIS__PORT", str(settings.redis.port))
    monkeypatch.setenv("SKYBUFFER_WRITER__BUDGET_SECONDS", "120")
    build_ingester(settings, "synthetic", count=30_000, rate=0).run()
    return settings


def _lake_files(settings: Settings) -> list[Path]:
    return sorted(Path(str(settings.lake.root)).rglob("*.parquet"))


def test_the_flow_writes_the_lake_and_frees_the_buffer(
    buffered: Settings, redis_server: ManagedRedis
) -> None:
    client = redis_server.client()
    memory_before = client.info("memory")["used_memory"]
    state = datawriter_flow(return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["rows"] == 30_000
    assert {p.relative_to(str(buffered.lake.root)).parts[0] for p in _lake_files(buffered)} == {
        "posts", "likes", "reposts", "follows", "blocks", "other"
    }  # fmt: skip
    assert sum(int(v) for v in client.hgetall(KEYS.event_counts).values()) == 0
    assert client.info("memory")["used_memory"] < memory_before
    stats = read_stats(client, KEYS)
    assert stats["runs:success"] == 1
    assert stats["last_success"] == stats["last_run"]


def test_a_run_while_another_datawriter_drains_is_skipped_naming_it(
    buffered: Settings, redis_server: ManagedRedis
) -> None:
    client = redis_server.client()
    other = Lease(client, KEYS.writer_lease, 60, "DataWriter write --loop")
    other.acquire(wait=False)
    try:
        state = datawriter_flow(return_state=True)
    finally:
        other.release()
    assert state.is_cancelled()
    assert "DataWriter write --loop" in (state.message or "")
    assert "skipped" in (state.message or "")
    assert _lake_files(buffered) == []
    assert read_stats(client, KEYS)["runs:skipped"] == 1


def _task_retried(name: str) -> bool:
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs()
    return any(r.name == name and r.run_count >= 1 and r.state_name in {"AwaitingRetry",
               "Retrying"} for r in runs)  # fmt: skip


def test_a_failing_task_retries_and_then_succeeds(
    buffered: Settings, redis_server: ManagedRedis
) -> None:
    lake = Path(str(buffered.lake.root))
    lake.mkdir(parents=True, exist_ok=True)
    blocker = lake / "posts"
    blocker.write_text("a regular file where the posts directory must go: writes fail")
    states: list[object] = []
    run = threading.Thread(target=lambda: states.append(datawriter_flow(return_state=True)))
    run.start()
    deadline = time.monotonic() + 120
    while not _task_retried("drain-posts"):
        assert time.monotonic() < deadline and run.is_alive(), "drain-posts never retried"
        time.sleep(0.2)
    blocker.unlink()  # the disk is fixed while the task waits for its retry
    run.join(timeout=180)
    state = states[0]
    assert state.is_completed(), state.message  # type: ignore[attr-defined]
    assert state.result()["types"]["posts"]["rows"] > 0  # type: ignore[attr-defined]
    assert sum(int(v) for v in redis_server.client().hgetall(KEYS.event_counts).values()) == 0


def test_a_run_over_its_budget_stops_between_batches_and_is_failed(
    buffered: Settings, redis_server: ManagedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cooperative deadline comes 20 s before the hard timeout: 20.3 s leaves 0.3 s.
    monkeypatch.setenv("SKYBUFFER_WRITER__BUDGET_SECONDS", "20.3")
    monkeypatch.setenv("SKYBUFFER_WRITER__BATCH_EVENTS", "500")
    state = datawriter_flow(return_state=True)
    assert state.is_failed()
    assert "over its budget" in (state.message or "")
    client = redis_server.client()
    assert read_stats(client, KEYS)["runs:timeout"] == 1
    left = sum(int(v) for v in client.hgetall(KEYS.event_counts).values())
    assert 0 < left < 30_000, "the run neither stopped at its budget nor wrote anything"


def test_a_partitioned_flow_drains_the_free_partitions_side_by_side(
    start_redis: Callable[..., ManagedRedis],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from skybuffer.buffer.partitions import Partitions
    from skybuffer.observability.status import collect_status

    server = start_redis(partitions=3)
    settings = make_settings(redis={"partitions": 3}, writer={"budget_seconds": 120})
    monkeypatch.setenv("SKYBUFFER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SKYBUFFER_REDIS__PORT", str(settings.redis.port))
    monkeypatch.setenv("SKYBUFFER_REDIS__PARTITIONS", "3")
    monkeypatch.setenv("SKYBUFFER_WRITER__BUDGET_SECONDS", "120")
    build_ingester(settings, "synthetic", count=30_000, rate=0).run()
    partitions = Partitions.of_settings(settings.redis)
    held_keys = partitions.keys(1)
    held = collect_status(settings).partitions["p1"]["events"]
    other = Lease(server.client(), held_keys.writer_lease, 60, "DataWriter write --loop")
    other.acquire(wait=False)
    try:
        state = datawriter_flow(return_state=True)
    finally:
        other.release()
    assert state.is_completed(), state.message
    first = state.result()
    assert first["rows"] == 30_000 - held > 0
    assert {name.rsplit("-", 1)[1] for name in first["types"]} == {"p0", "p2"}
    assert read_stats(server.client(), held_keys)["runs:skipped"] == 1
    second = datawriter_flow(return_state=True)
    assert second.is_completed() and second.result()["rows"] == held
    assert collect_status(settings).events == 0
    names = {p.name.split("-")[1] for p in _lake_files(settings)}
    assert names == {"p0", "p1", "p2"}
