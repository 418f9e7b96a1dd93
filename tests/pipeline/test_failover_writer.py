"""A sentinel failover while a DataWriter holds its lease and has drained part of the
buffer: the writer reaches the new primary by itself, holds (or takes back) its lease
there, and the lake ends with every event exactly once. (A promoted replica that lacks
the writer's last commits is a Redis that forgot: tests/e2e/test_operators.py
proves that case with an AOF cut back mid-run.)"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from skybuffer.buffer.sentinel import SentinelTopology, wait_for_new_primary
from skybuffer.errors import LeaseLost, RedisUnavailable
from skybuffer.pipeline.datawriter import DataWriter
from skybuffer.pipeline.runner import build_ingester
from skybuffer.settings import Settings
from tests.conftest import stop_pid

SENTINEL = {
    "mode": "sentinel",
    "sentinel_down_after_ms": 1000,
    "sentinel_failover_timeout_ms": 5000,
}
EVENTS = 30_000


@pytest.fixture
def sentinel_settings(make_settings: Callable[..., Settings]) -> Iterator[Settings]:
    settings = make_settings(redis=SENTINEL, writer={"batch_events": 4_000})
    settings.claim_ports()
    topology = SentinelTopology(settings.redis, settings.redis_dir)
    try:
        topology.start()
        yield settings
    finally:
        pids = [
            p
            for p in (
                *(n.pid() for n in topology.nodes()),
                *(s.pid() for s in topology.sentinels()),
            )
            if p
        ]
        try:
            topology.stop(timeout=10)
        finally:
            for pid in pids:
                stop_pid(pid)


def _identities(root: Path) -> Counter[tuple[object, ...]]:
    found: Counter[tuple[object, ...]] = Counter()
    columns = ["did", "kind", "rkey", "rev", "operation", "time_us"]
    for file in root.rglob("part-*.parquet"):
        for row in ds.dataset(str(file), format="parquet").to_table(columns=columns).to_pylist():
            found[tuple(row.values())] += 1
    return found


def test_a_failover_while_the_writer_holds_its_lease_keeps_the_lake_exactly_once(
    sentinel_settings: Settings,
) -> None:
    settings = sentinel_settings
    assert build_ingester(settings, "synthetic", count=EVENTS, rate=0).run().events == EVENTS
    topology = SentinelTopology(settings.redis, settings.redis_dir)
    writer = DataWriter.from_settings(settings)
    try:
        with writer.owning(wait=False):
            first = writer.drain_type("likes")  # part of the buffer, committed
            assert first.rows > 0
            old = topology.primary()
            assert old is not None
            node = next(n for n in topology.nodes() if n.port == old[1])
            pid = node.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_for_new_primary(topology, old, timeout=60)
            _drain_through_failover(writer)
        assert writer.drain_once().rows == 0
    finally:
        writer.close()
    found = _identities(Path(str(settings.lake.root)))
    assert sum(found.values()) == EVENTS == len(found)  # every event once, none twice


def _drain_through_failover(writer: DataWriter) -> None:
    """Drain until empty, as the loop would: an outage is waited out, a lease the new
    primary does not know is taken back."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if not writer.lease.held:
                writer.lease.acquire(wait=True, timeout=30)
            result = writer.drain_once()
            if result.ok and result.rows == 0:
                return
        except (RedisUnavailable, LeaseLost):
            writer.lease.held = False
            time.sleep(0.2)
    raise AssertionError("the writer did not drain the buffer after the failover")
