"""`stack up` on a sentinel or cluster data dir: Prometheus scrapes every node (and every
sentinel) through the one redis_exporter, each its own instance on the ports the data
dir chose, the exporter user is denied nothing anywhere, the alerts' and panels' series
of those topologies are there, and a primary killed in the cluster fires RedisFailover.

Also covers: skybuffer.observability.redis_targets, skybuffer.buffer.sentinel_process
(the sentinels' exporter user), the stack in sentinel and cluster modes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, start_http_server

from skybuffer.buffer.cluster import ClusterTopology
from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.sentinel import SentinelTopology
from skybuffer.buffer.sentinel_client import SENTINEL_SECRET
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.topology import connect
from skybuffer.constants import TYPES
from skybuffer.datadir import free_port
from skybuffer.observability.exporter import PipelineCollector
from skybuffer.settings import Settings, StackSettings
from tests.conftest import CLUSTER, stop_pid

from .harness import (
    TOPOLOGY_ONLY,
    alert_rules,
    fast_config,
    firing,
    get_json,
    panel_queries,
    query,
    require,
    stack_settings,
    wait_for,
)

pytestmark = pytest.mark.slow

SENTINEL = {
    "mode": "sentinel",
    "sentinel_down_after_ms": 1000,
    "sentinel_failover_timeout_ms": 5000,
}


@pytest.fixture
def sentinels(make_settings: Callable[..., Settings]) -> Iterator[SentinelTopology]:
    """A started local sentinel topology; every process stopped by its pid afterwards."""
    require("redis-server")
    settings = make_settings(redis=SENTINEL)
    topology = SentinelTopology(settings.redis, settings.redis_dir)
    try:
        topology.start()
        yield topology
    finally:
        pids = [n.pid() for n in topology.nodes()] + [s.pid() for s in topology.sentinels()]
        with contextlib.suppress(Exception):
            topology.stop(timeout=10)
        for pid in pids:
            stop_pid(pid)


def _stack(
    make_settings: Callable[..., Settings],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
    tmp_path: Any,
    mode: dict[str, Any],
    writer_port: int = 0,
) -> tuple[int, str]:
    """The stack's exporter port and Prometheus URL."""
    settings = make_settings(redis=mode, metrics={"ingest_port": 0, "writer_port": writer_port})
    conf = stack_settings(fast_config(tmp_path / "config", short_for=True))
    urls = run_stack(settings, conf)
    exporter = urllib.parse.urlsplit(urls["redis_exporter"]).port
    assert exporter is not None
    return exporter, urls["prometheus"]


def _redis_targets(prometheus: str) -> list[dict[str, Any]]:
    targets = get_json(f"{prometheus}/api/v1/targets", state="active")["data"]["activeTargets"]
    return [t for t in targets if t["labels"]["job"] == "redis"]


def _wait_all_up(prometheus: str, count: int) -> list[dict[str, Any]]:
    def up() -> list[dict[str, Any]] | None:
        targets = _redis_targets(prometheus)
        healthy = len(targets) == count and all(t["health"] == "up" for t in targets)
        result = query(prometheus, "redis_up == 1")["data"]["result"]
        return targets if healthy and len(result) == count else None

    return list(wait_for(f"{count} Redis targets up", up, timeout=90))


def _assert_one_target_per_process(
    targets: list[dict[str, Any]], addresses: set[str], exporter_port: int
) -> None:
    """instance = the process's own address (never the exporter's), scraped through the
    data dir's exporter: the scrape URL names exactly those two ports."""
    assert {t["labels"]["instance"] for t in targets} == addresses
    assert len({t["labels"]["node"] for t in targets}) == len(addresses)
    for target in targets:
        assert "/scrape?target=redis" in target["scrapeUrl"], target["scrapeUrl"]
        ports = {int(p) for p in re.findall(r"(?::|%3A)(\d+)", target["scrapeUrl"])}
        own = int(target["labels"]["instance"].rsplit(":", 1)[1])
        assert ports == {exporter_port, own}, target["scrapeUrl"]


def _assert_exporter_denied_nothing(clients: list[redis.Redis]) -> None:
    for client in clients:
        denied = [(e["username"], e["reason"], e["object"]) for e in client.acl_log()]
        assert denied == [], "ACL LOG after scrapes (user, reason, command or key)"


def _assert_panels_have_data(prometheus: str, wanted: Callable[[str], bool]) -> None:
    remaining = [q for q in panel_queries() if TOPOLOGY_ONLY.search(q[2]) and wanted(q[2])]
    assert remaining

    def all_have_data() -> bool:
        remaining[:] = [q for q in remaining if not query(prometheus, q[2])["data"]["result"]]
        return not remaining

    try:
        wait_for("the topology panels to return data", all_have_data)
    except pytest.fail.Exception:
        pytest.fail(f"panels without data: {remaining}")


def _exported(prometheus: str) -> set[str]:
    answer = query(prometheus, 'group by (__name__) ({__name__=~"redis_.+"})')
    return {series["metric"]["__name__"] for series in answer["data"]["result"]}


def _used_by_alerts(pattern: str) -> set[str]:
    names = {name for rule in alert_rules() for name in re.findall(r"\bredis_\w+", rule["expr"])}
    return {name for name in names if re.match(pattern, name)}


def test_stack_up_on_a_sentinel_topology_scrapes_both_nodes_and_the_three_sentinels(
    sentinels: SentinelTopology,
    make_settings: Callable[..., Settings],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
    tmp_path: Any,
) -> None:
    nodes, watchers = sentinels.nodes(), sentinels.sentinels()
    admins = [node.client("admin") for node in nodes] + [
        _sentinel_client(sentinels, s.port) for s in watchers
    ]
    for client in admins:
        client.acl_log_reset()
    exporter_port, prometheus = _stack(make_settings, run_stack, tmp_path, SENTINEL)

    targets = _wait_all_up(prometheus, 5)
    _assert_one_target_per_process(
        targets,
        {n.address for n in nodes} | {s.address for s in watchers},
        exporter_port,
    )
    roles = query(prometheus, 'count by (role) (redis_instance_info{role=~"master|slave"})')
    assert {r["metric"]["role"]: r["value"][1] for r in roles["data"]["result"]} == {
        "master": "1",
        "slave": "1",
    }
    _assert_panels_have_data(prometheus, lambda expr: not re.search("cluster|partition", expr))
    wanted = _used_by_alerts(r"redis_(sentinel|master_link|connected_slave|master_repl)")
    assert wanted <= _exported(prometheus), wanted - _exported(prometheus)
    _assert_exporter_denied_nothing(admins)


def _sentinel_client(topology: SentinelTopology, port: int) -> redis.Redis:
    password = topology.credentials(SENTINEL_SECRET).password
    return redis.Redis(host=topology.settings.host, port=port, password=password)


@contextlib.contextmanager
def serving_partitions(settings: Settings, port: int) -> Iterator[None]:
    """The DataWriter's per-partition figures, served as the writer process serves them."""
    partitions = Partitions.of_settings(settings.redis)
    client_for: Callable[[str], redis.Redis] = lambda prefix: connect(  # noqa: E731
        settings.redis, settings.redis_dir, prefix
    )
    for number in range(partitions.count):
        keys = partitions.keys(number)
        client_for(partitions.prefix(number)).xadd(keys.stream(TYPES[0]), {"v": "1"})
    registry = CollectorRegistry()
    first = partitions.prefix(0)
    registry.register(
        PipelineCollector(client_for(first), partitions.keys(0), None, partitions, client_for)
    )
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_stack_up_on_a_cluster_scrapes_all_six_nodes_and_a_killed_primary_fires_failover(
    cluster: ClusterTopology,
    make_settings: Callable[..., Settings],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
    tmp_path: Any,
) -> None:
    nodes: list[ManagedRedis] = cluster.nodes()
    admins = [node.client("admin") for node in nodes]
    for client in admins:
        client.acl_log_reset()
    writer_port = free_port()
    settings = make_settings(redis=CLUSTER)
    with serving_partitions(settings, writer_port):
        exporter_port, prometheus = _stack(make_settings, run_stack, tmp_path, CLUSTER, writer_port)
        targets = _wait_all_up(prometheus, 6)
        addresses = {node.address for node in nodes}
        _assert_one_target_per_process(targets, addresses, exporter_port)
        _assert_panels_have_data(prometheus, lambda expr: "redis_sentinel_" not in expr)
    wanted = _used_by_alerts(r"redis_(cluster|master_link|connected_slave|master_repl)")
    assert wanted <= _exported(prometheus), wanted - _exported(prometheus)
    _assert_exporter_denied_nothing(admins)
    assert firing(prometheus, "RedisFailover") == []

    primary = next(n for n in nodes if n.client("admin").info("replication")["role"] == "master")
    pid = primary.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    alerts = wait_for("RedisFailover to fire", lambda: firing(prometheus, "RedisFailover"), 90)
    promoted = {alert["labels"]["instance"] for alert in alerts}
    assert len(promoted) == 1 and promoted != {primary.address}, promoted
    down = wait_for("RedisDown on the killed node", lambda: firing(prometheus, "RedisDown"), 90)
    assert {alert["labels"]["instance"] for alert in down} == {primary.address}
