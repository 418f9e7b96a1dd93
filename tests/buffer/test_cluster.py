"""The local Redis Cluster: six nodes on recorded free ports, three primaries sharing the
slots with a replica each, the same ACL users and private files as standalone; a
partition's client follows its slot to the promoted replica when its primary is killed;
a stop and start keeps the cluster and its data; `redis start|status|stop --mode cluster`.

Also covers: skybuffer.buffer.cluster (SlotLocator, SlotConnection)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis
from typer.testing import CliRunner

from skybuffer.buffer.cluster import ClusterTopology
from skybuffer.buffer.partitions import Partitions
from skybuffer.cli import app
from skybuffer.datadir import CLUSTER_PORTS, recorded_topology
from skybuffer.settings import Settings
from tests.conftest import CLUSTER, cluster_pids, stop_pid


def test_cluster_starts_whole_shares_the_slots_and_keeps_the_acl_users(
    cluster: ClusterTopology,
) -> None:
    status = cluster.status()
    assert status["cluster_state"] == "ok"
    roles = sorted(node["role"] for node in status["nodes"])
    assert roles == ["master"] * 3 + ["slave"] * 3
    slots = sorted(r for node in status["nodes"] for r in node["slots"])
    assert slots == ["0-5460", "10923-16383", "5461-10922"]
    assert set(recorded_topology(cluster.data_dir)[1]) == set(CLUSTER_PORTS)
    partitions = Partitions.of_settings(cluster.settings)
    for number in range(partitions.count):
        client = cluster.client(prefix=partitions.prefix(number))
        assert client.set(partitions.keys(number).stream("probe"), "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("other:{" + partitions.tags[number] + "}", "1")
    for path in (cluster.redis_dir / "secrets", cluster.redis_dir / "cluster-1"):
        assert path.stat().st_mode & 0o077 == 0
    assert (cluster.redis_dir / "cluster-1" / "conf" / "redis.conf").stat().st_mode & 0o077 == 0


def test_a_partition_client_follows_its_slot_to_the_promoted_replica(
    cluster: ClusterTopology,
) -> None:
    prefix = Partitions.of_settings(cluster.settings).prefix(0)
    client = cluster.client(prefix=prefix)
    client.set(prefix + "before", "kept")
    admin = cluster.client("admin", prefix=prefix)
    assert admin.execute_command("WAIT", 1, 5000) == 1  # on the replica before the kill
    primary = next(n for n in cluster.nodes() if n.port == _port_of(client))
    pid = primary.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    failures = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.set(prefix + "after", "1")
            break
        except redis.ConnectionError:
            failures += 1
            time.sleep(0.1)
    assert failures > 0  # it was refused while the slot had no primary
    assert _port_of(client) != primary.port
    assert client.get(prefix + "before") == b"kept"


def test_a_stopped_cluster_starts_again_with_its_data(cluster: ClusterTopology) -> None:
    prefix = Partitions.of_settings(cluster.settings).prefix(1)
    cluster.client(prefix=prefix).set(prefix + "kept", "1")
    assert cluster.stop(timeout=10)
    assert not cluster_pids(cluster)
    assert cluster.start()
    assert cluster.is_serving()
    assert cluster.client(prefix=prefix).get(prefix + "kept") == b"1"


def test_redis_start_status_stop_mode_cluster(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis=CLUSTER)
    env = {
        "SKYBUFFER_DATA_DIR": str(settings.data_dir),
        "SKYBUFFER_REDIS__CLUSTER_NODE_TIMEOUT_MS": "1000",
    }
    runner = CliRunner()
    topology = ClusterTopology(settings.redis, settings.redis_dir)
    try:
        started = runner.invoke(app, ["redis", "start", "--mode", "cluster"], env=env)
        assert started.exit_code == 0, started.output
        assert "state ok" in started.output
        status = runner.invoke(app, ["redis", "status"], env=env)  # the recorded mode
        assert status.exit_code == 0, status.output
        assert status.output.count("master") == 3 and "slots 0-5460" in status.output
        stopped = runner.invoke(app, ["redis", "stop"], env=env)
        assert stopped.exit_code == 0, stopped.output
        assert not cluster_pids(ClusterTopology(settings.redis, settings.redis_dir))
        after = runner.invoke(app, ["redis", "status"], env=env)
        assert after.exit_code != 0
    finally:
        for pid in cluster_pids(topology):
            stop_pid(pid)


def _port_of(client: redis.Redis) -> int:
    connection = client.connection_pool.get_connection()
    try:
        return int(connection.port)
    finally:
        client.connection_pool.release(connection)
