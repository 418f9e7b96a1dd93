"""Fixtures: real redis-server processes on free loopback ports in temp dirs.

Every server a test starts is stopped by the pid it was started with (SHUTDOWN first,
SIGKILL if it will not go). No fakes: the tests run against the redis-server binary.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from skybuffer.buffer.cluster import ClusterTopology
from skybuffer.buffer.server import ManagedRedis
from skybuffer.datadir import free_port
from skybuffer.settings import Settings, load_settings

GOLDEN = Path(__file__).parent / "data" / "golden_v1.jsonl"


def stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, the process we started; reap it if it is our child."""
    if pid is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except (ProcessLookupError, ChildProcessError):
                return
            time.sleep(0.05)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings rooted in this test's temp dir, with a free Redis port."""
    port = free_port()

    def make(**overrides: Any) -> Settings:
        redis_overrides = {"port": port, **overrides.pop("redis", {})}
        overrides.setdefault("metrics", {"ingest_port": 0, "writer_port": 0})
        return load_settings(data_dir=tmp_path / "var", redis=redis_overrides, **overrides)

    return make


@pytest.fixture
def start_redis(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., ManagedRedis]]:
    """Start a managed redis-server (real binary) for the test; stopped by pid after it."""
    started: list[ManagedRedis] = []

    def start(**redis_overrides: Any) -> ManagedRedis:
        settings = make_settings(redis=redis_overrides)
        server = ManagedRedis(settings.redis, settings.redis_dir)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        pid = server.pid()
        try:
            server.stop(timeout=10)
        except Exception:  # noqa: BLE001 - teardown must reach the kill below
            pass
        stop_pid(pid)


@pytest.fixture
def redis_server(start_redis: Callable[..., ManagedRedis]) -> ManagedRedis:
    return start_redis()


@pytest.fixture
def client(redis_server: ManagedRedis) -> redis.Redis:
    """The pipeline user's client on a fresh server."""
    return redis_server.client()


@pytest.fixture
def golden_lines() -> list[bytes]:
    return GOLDEN.read_bytes().splitlines()


def buffered_events(client: redis.Redis, prefix: str = "skybuffer:") -> dict[str, list[bytes]]:
    """Every event in the streams, decoded, per type (reads only)."""
    from skybuffer.buffer.codec import Decoder
    from skybuffer.constants import TYPES, Keys

    keys, decoder = Keys(prefix), Decoder()
    found: dict[str, list[bytes]] = {}
    for type_ in TYPES:
        events: list[bytes] = []
        for _id, fields in client.xrange(keys.stream(type_)):
            events.extend(decoder.decode(fields))
        found[type_] = events
    return found


CLUSTER = {"mode": "cluster", "cluster_node_timeout_ms": 1000}


def cluster_pids(topology: ClusterTopology) -> list[int]:
    try:
        return [pid for pid in (n.pid() for n in topology.nodes()) if pid is not None]
    except Exception:  # noqa: BLE001 - no ports recorded: nothing was started
        return []


@pytest.fixture
def cluster(make_settings: Callable[..., Settings]) -> Iterator[ClusterTopology]:
    """A started local cluster; every node stopped by its pid afterwards."""
    settings = make_settings(redis=CLUSTER)
    settings.claim_ports()
    started = ClusterTopology(settings.redis, settings.redis_dir)
    try:
        started.start()
        yield started
    finally:
        pids = cluster_pids(started)
        try:
            started.stop(timeout=10)
        finally:
            for pid in pids:
                stop_pid(pid)


@pytest.fixture
def started_servers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[psutil.Process]:
    """The redis-servers this test makes the bench start (never another process on the
    machine); their scratch directories go under the test's temp dir."""
    servers: list[psutil.Process] = []
    start = ManagedRedis.start

    def recording_start(server: ManagedRedis) -> bool:
        started = start(server)
        if started and (pid := server.pid()) is not None:
            servers.append(psutil.Process(pid))
        return started

    monkeypatch.setattr(ManagedRedis, "start", recording_start)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return servers


def running(process: psutil.Process) -> bool:
    """is_running() also compares the start time, so a reused pid is not ours."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
