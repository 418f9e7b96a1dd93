"""The sentinel topology: it starts whole on recorded free ports, names its primary,
replicates with the same ACL users, fails over when the primary dies, follows the new
primary from the client, and stops whole; `redis start|status|stop --mode sentinel`.

Also covers: skybuffer.datadir (the topology's recorded ports and mode),
skybuffer.settings.sections (redis.mode), skybuffer.buffer.sentinel_process,
skybuffer.buffer.sentinel_client,
skybuffer.cli.redis_server, skybuffer.buffer.topology."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from skybuffer import processes
from skybuffer.buffer.sentinel import SentinelTopology, wait_for_new_primary
from skybuffer.cli import app
from skybuffer.datadir import TOPOLOGY_PORTS, recorded_topology
from skybuffer.errors import ConfigError
from skybuffer.settings import Settings, load_settings
from tests.conftest import stop_pid

SENTINEL = {
    "mode": "sentinel",
    "sentinel_down_after_ms": 1000,
    "sentinel_failover_timeout_ms": 5000,
}


def _pids(topology: SentinelTopology) -> list[int]:
    try:
        every = [n.pid() for n in topology.nodes()] + [s.pid() for s in topology.sentinels()]
    except Exception:  # noqa: BLE001 - no ports recorded: nothing was started
        return []
    return [pid for pid in every if pid is not None]


@pytest.fixture
def topology(make_settings: Callable[..., Settings]) -> Iterator[SentinelTopology]:
    """A started local sentinel topology; every process stopped by its pid afterwards."""
    settings = make_settings(redis=SENTINEL)
    started = SentinelTopology(settings.redis, settings.redis_dir)
    try:
        started.start()
        yield started
    finally:
        pids = _pids(started)
        try:
            started.stop(timeout=10)
        finally:
            for pid in pids:
                stop_pid(pid)


def test_topology_starts_whole_names_its_primary_replicates_and_stops_whole(
    topology: SentinelTopology,
) -> None:
    status = topology.status()
    primary, replica = status["nodes"]
    assert status["primary"] == primary["address"] and primary["role"] == "master"
    assert replica["role"] == "slave" and not replica["primary"]
    assert all(s["pid"] for s in status["sentinels"])
    _, ports = recorded_topology(topology.data_dir)
    assert set(ports) == set(TOPOLOGY_PORTS)
    client = topology.client()
    client.set("skybuffer:probe", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("other:probe", "1")  # the same ACL users as standalone
    replica_admin = topology.nodes()[1].client("admin")
    topology.client("admin").wait(1, 5000)
    assert replica_admin.get("skybuffer:probe") == b"1"
    for path in (topology.redis_dir / "secrets", topology.redis_dir / "sentinel-1"):
        assert path.stat().st_mode & 0o077 == 0
    assert (topology.redis_dir / "sentinel-1" / "sentinel.conf").stat().st_mode & 0o077 == 0
    pids = _pids(topology)
    assert len(pids) == 5
    assert topology.stop(timeout=10)
    assert all(processes.wait_gone(pid, 10) for pid in pids)
    assert not topology.is_serving()


def test_primary_killed_a_replica_is_promoted_and_the_client_follows_it(
    topology: SentinelTopology,
) -> None:
    client = topology.client()
    client.set("skybuffer:before", "1")
    topology.client("admin").wait(1, 5000)
    old = topology.primary()
    assert old is not None
    killed = next(n for n in topology.nodes() if n.port == old[1])
    pid = killed.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert processes.wait_gone(pid, 10)
    with pytest.raises(redis.ConnectionError):
        client.get("skybuffer:before")  # the switch is a transient outage, not a retry
    new = wait_for_new_primary(topology, old, 60)
    assert new != old
    assert client.get("skybuffer:before") == b"1"  # the same client, the new primary
    assert client.set("skybuffer:after", "1")
    topology.stop(timeout=10)
    topology.start()  # a restart keeps the sentinels' primary as primary
    assert topology.primary() == new
    roles = {n["address"]: n["role"] for n in topology.status()["nodes"]}
    assert roles == {killed.address: "slave", f"{new[0]}:{new[1]}": "master"}


def test_redis_start_status_stop_in_sentinel_mode_cover_every_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    runner = CliRunner()
    base = ["--data-dir", str(data_dir)]
    env = {"SKYBUFFER_REDIS__SENTINEL_DOWN_AFTER_MS": "1000"}
    settings = load_settings(data_dir=data_dir)
    started = runner.invoke(app, ["redis", "start", "--mode", "sentinel", *base], env=env)
    topology = SentinelTopology(load_settings(data_dir=data_dir).redis, data_dir / "redis")
    try:
        assert started.exit_code == 0, started.output
        assert "sentinel topology started" in started.output
        assert recorded_topology(data_dir)[0] == "sentinel"  # later commands follow it
        status = runner.invoke(app, ["redis", "status", "--json", *base])
        assert status.exit_code == 0, status.output
        info = json.loads(status.stdout)
        assert info["running"] and info["mode"] == "sentinel"
        assert info["primary"] == info["nodes"][0]["address"]
        assert len(info["nodes"]) == 2 and len(info["sentinels"]) == 3
        table = runner.invoke(app, ["redis", "status", *base])
        assert "node-2" in table.output and "sentinel-3" in table.output
        pids = _pids(topology)
        stopped = runner.invoke(app, ["redis", "stop", *base])
        assert stopped.exit_code == 0, stopped.output
        assert all(processes.wait_gone(pid, 10) for pid in pids)
        after = runner.invoke(app, ["redis", "status", *base])
        assert after.exit_code == 1 and "not running" in after.output
    finally:
        for pid in _pids(topology):
            stop_pid(pid)
    assert settings.redis.mode == "standalone"  # settings read before the start


def test_an_unknown_mode_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="standalone, sentinel, cluster"):
        load_settings(redis={"mode": "raft"})


def test_external_sentinels_need_the_pipeline_password(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var", redis={"sentinels": ["127.0.0.1:1"]})
    with pytest.raises(ConfigError, match="SKYBUFFER_REDIS__PASSWORD"):
        SentinelTopology(settings.redis, settings.redis_dir).credentials()


def test_a_producer_waiting_for_one_replica_gets_its_acknowledgement(
    topology: SentinelTopology, golden_lines: list[bytes]
) -> None:
    from skybuffer.buffer.producer import Encoder, Producer
    from skybuffer.constants import Keys

    producer = Producer(topology.client(), Keys(), "replay", None, replica_acks=(1, 5000))
    for seq in (1, 2, 3):
        batch = Encoder(max_event_bytes=10_000).encode(seq, str(seq), golden_lines)
        assert producer.write(batch)
    assert producer.short_acks == 0
    replica = topology.nodes()[1].client("admin")
    assert replica.hget("skybuffer:cursor:replay", "seq") == b"3"  # there before WAIT returned
