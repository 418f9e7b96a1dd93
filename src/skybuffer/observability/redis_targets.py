"""The Redis processes redis_exporter scrapes: every node, and every sentinel, of a
sentinel or cluster topology (standalone: the one server, through the exporter's own
``/metrics``, as ever).

One exporter process serves them all, through its multi-target endpoint
``/scrape?target=redis://host:port`` (redis_exporter's exporter/http.go): each scrape
opens its own connection with the flags of the process -- the read-only ``exporter``
user, its password looked up by address in the password file, ``-check-streams`` -- so
two to nine Redis processes cost one process and one port, not one exporter each, and a
node added to the list is one more file_sd group, not a process to start and stop.

Prometheus reaches each node through a file_sd group that names the exporter as its
address and sets, by label, the path (``__metrics_path__``), the URL parameter
(``__param_target``), and ``instance`` = the node's own address (without it every node
would be the exporter's address). ``node`` is the node's name (``cluster-3``,
``node-1``, ``sentinel-2``). A node's role is no target label: a failover changes it;
``redis_instance_info{role}`` has it, and dashboards join on ``instance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from skybuffer.buffer.cluster import ClusterTopology
from skybuffer.buffer.sentinel import SentinelTopology
from skybuffer.buffer.sentinel_client import CONNECTION_ERRORS
from skybuffer.settings import Settings


@dataclass(frozen=True)
class RedisTarget:
    """One Redis process to scrape: its name and its address (``host:port``)."""

    node: str
    address: str

    @property
    def url(self) -> str:
        """The address as the exporter is given it (and its password file is keyed by)."""
        return f"redis://{self.address}"

    def group(self, exporter: str) -> dict[str, Any]:
        """The file_sd group that scrapes this node through the exporter at ``exporter``."""
        labels = {
            "__metrics_path__": "/scrape",
            "__param_target": self.url,
            "instance": self.address,
            "node": self.node,
        }
        return {"targets": [exporter], "labels": labels}


def redis_targets(settings: Settings) -> list[RedisTarget]:
    """Every Redis process of the data dir's topology; [] in standalone mode."""
    mode = settings.redis.mode
    if mode == "cluster":
        return _cluster(ClusterTopology(settings.redis, settings.redis_dir))
    if mode == "sentinel":
        return _sentinel(SentinelTopology(settings.redis, settings.redis_dir))
    return []


def _cluster(topology: ClusterTopology) -> list[RedisTarget]:
    if topology.external:
        return [RedisTarget(a, a) for a in _addresses(topology.addresses())]
    return [
        RedisTarget(node.directory.name, _address(node.settings.host, node.port))
        for node in topology.nodes()
    ]


def _sentinel(topology: SentinelTopology) -> list[RedisTarget]:
    sentinels = [
        RedisTarget(f"sentinel-{number}", address)
        for number, address in enumerate(_addresses(topology.sentinel_addresses()), start=1)
    ]
    if topology.external:
        return [RedisTarget(a, a) for a in _discovered_nodes(topology)] + sentinels
    nodes = [
        RedisTarget(node.directory.name, _address(node.settings.host, node.port))
        for node in topology.nodes()
    ]
    return nodes + sentinels


def _discovered_nodes(topology: SentinelTopology) -> list[str]:
    """An external deployment's primary and replicas, as its sentinels know them now
    (none when no sentinel answers: the sentinels are still scraped)."""
    name = topology.settings.sentinel_master
    try:
        sentinel = topology.clients.sentinel()
        found = [sentinel.discover_master(name), *sentinel.discover_slaves(name)]
    except (*CONNECTION_ERRORS, redis.ResponseError):  # MasterNotFoundError is one
        return []
    return _addresses(found)


def _addresses(pairs: list[tuple[str, int]]) -> list[str]:
    return [_address(host, port) for host, port in pairs]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
