"""The sentinel topology: a primary, a replica and three sentinels that fail over by
themselves, and the client that finds the primary through them.

Locally (``skybuffer redis start --mode sentinel``) each node is a ``ManagedRedis`` in
``{data_dir}/redis/node-{1,2}``, started from a copy of the committed redis.conf (AOF
everysec, the same ACL users, 0600/0700 files) that ends with the node's replication
directives; a copy, because a sentinel rewrites the config of every node it reconfigures
(CONFIG REWRITE) and the committed file must stay as committed. Two more ACL users
(config/redis/users-sentinel.acl) let the replica replicate and the sentinels watch and
reconfigure, each with only the commands that takes. The sentinels are ``redis-server
<conf> --sentinel`` in ``{data_dir}/redis/sentinel-{1,2,3}``, quorum 2, password-protected.
Every port is chosen free at the first start and recorded in the data dir's pipeline.json
(``datadir.TOPOLOGY_PORTS``; the first primary has the ``redis`` port).

Which node is primary is the sentinels' business: a start (after a stop) brings the node
their config names as primary up as primary, the other as its replica.

Clients find the primary through the sentinels (buffer/sentinel_client.py), so they
follow a failover by themselves; a promoted replica that lagged is a Redis that forgot,
detected by the cursor and the ledger as after a crash.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import redis

from skybuffer import processes
from skybuffer.buffer.sentinel_client import (
    CONNECTION_ERRORS,
    NODE_USERS,
    SENTINEL_SECRET,
    SentinelClients,
)
from skybuffer.buffer.sentinel_process import Secrets, SentinelProcess
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.users import AclUsers, Credentials
from skybuffer.datadir import TOPOLOGY_PORTS, claim, port_of, recorded_topology
from skybuffer.errors import ConfigError, MissingBinaryError, RedisUnavailable
from skybuffer.privilege import make_private, write_private
from skybuffer.settings import RedisSettings


class SentinelTopology:
    """The local sentinel topology of a data dir, or an external one (``redis.sentinels``):
    where its processes live, starting and stopping them; its clients are
    ``SentinelClients``, which the client methods here hand on to."""

    def __init__(self, settings: RedisSettings, redis_dir: Path) -> None:
        self.settings = settings
        self.redis_dir = redis_dir
        self.data_dir = redis_dir.parent
        self.secrets_dir = redis_dir / "secrets"
        _, ports = recorded_topology(self.data_dir)
        self._ports = ports

    @property
    def external(self) -> bool:
        return bool(self.settings.sentinels)

    def node_ports(self) -> list[int]:
        return [port_of(self.settings.port, "redis"), self._port("redis_replica")]

    def _port(self, name: str) -> int:
        return port_of(self._ports.get(name), f"the sentinel topology's {name}")

    def nodes(self) -> list[ManagedRedis]:
        return [self._node(i, port) for i, port in enumerate(self.node_ports(), start=1)]

    def _node(self, number: int, port: int) -> ManagedRedis:
        directory = self.redis_dir / f"node-{number}"
        settings = self.settings.model_copy(
            update={"port": port, "conf": directory / "conf" / "redis.conf"}
        )
        return ManagedRedis(settings, directory, secrets_dir=self.secrets_dir, users=NODE_USERS)

    def sentinels(self) -> list[SentinelProcess]:
        return [
            SentinelProcess(
                self.redis_dir / f"sentinel-{i}", self.settings.host, self._port(f"sentinel_{i}")
            )
            for i in range(1, 4)
        ]

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        if self.external:
            return [_host_port(a) for a in self.settings.sentinels]
        return [(s.host, s.port) for s in self.sentinels()]

    @property
    def clients(self) -> SentinelClients:
        """Clients through this topology's sentinels (where they listen now)."""
        return SentinelClients(self.settings, self.secrets_dir, self.sentinel_addresses())

    def credentials(self, user: str = "skybuffer") -> Credentials:
        return self.clients.credentials(user)

    def client(self, user: str = "skybuffer", **kwargs: Any) -> redis.Redis:
        """A client of the current primary that follows failovers."""
        return self.clients.client(user, **kwargs)

    def primary(self) -> tuple[str, int] | None:
        """The primary the sentinels name now (None when none answers or knows one)."""
        return self.clients.primary()

    @property
    def address(self) -> str:
        primary = self.primary()
        where = f"{primary[0]}:{primary[1]}" if primary else "no primary yet"
        return f"{where} (sentinel master {self.settings.sentinel_master!r})"

    def is_serving(self) -> bool:
        return self.clients.is_serving()

    def start(self) -> bool:
        """Start every node and sentinel not running (the sentinels' primary as primary);
        returns once the sentinels know the primary, its replica and each other. True
        when this call started something."""
        if self.external:
            raise ConfigError("redis.sentinels names an external deployment: skybuffer starts none")
        binary = shutil.which("redis-server")
        if binary is None:
            raise MissingBinaryError("redis-server", "redis-server")
        self._ports = claim(self.data_dir, list(TOPOLOGY_PORTS), self.redis_dir)
        make_private(self.redis_dir)
        nodes, sentinels = self.nodes(), self.sentinels()
        primary = self._primary_to_start(nodes, sentinels[0])
        started = False
        for node in sorted(nodes, key=lambda n: n is not primary):
            if not node.is_serving():
                self._write_conf(node, None if node is primary else primary)
            started |= node.start()
        secrets = Secrets(
            nodes[0].credentials(SENTINEL_SECRET).password,
            nodes[0].credentials("sentinel").password,
            self._sentinel_users(),
        )
        for sentinel in sentinels:
            make_private(sentinel.directory)
            sentinel.render(self.settings, (primary.settings.host, primary.port), secrets)
            started |= sentinel.pid() is None
            sentinel.start(binary, self.data_dir)
        self._wait_until_watched(self.settings.start_timeout_seconds)
        return started

    def _sentinel_users(self) -> str:
        """The sentinels' own ACL users (config/redis/sentinel.acl beside redis.conf: the
        read-only exporter's), or none when the file is not there."""
        template = self.settings.conf.parent / "sentinel.acl"
        if not template.exists():
            return ""
        return AclUsers(self.settings, self.secrets_dir, NODE_USERS).rendered(template)

    def _primary_to_start(self, nodes: list[ManagedRedis], first: SentinelProcess) -> ManagedRedis:
        monitored = first.monitored_primary()
        for node in nodes:
            if monitored is not None and monitored[1] == node.port:
                return node
        return nodes[0]

    def _write_conf(self, node: ManagedRedis, primary: ManagedRedis | None) -> None:
        """The committed redis.conf and users.acl, plus this node's replication lines."""
        conf_dir = node.settings.conf.parent
        make_private(node.directory)
        make_private(conf_dir)
        committed = self.settings.conf
        acl = committed.parent / "users.acl"
        extra = committed.parent / "users-sentinel.acl"
        for path in (committed, acl, extra):
            if not path.exists():
                raise ConfigError(f"{path} is missing (it belongs beside redis.conf)")
        lines = [
            committed.read_text(),
            "# --- sentinel topology node (later lines win) ---",
            "repl-diskless-sync-delay 0",  # one replica: no reason to wait for more
            "masteruser replica",
            f"masterauth {node.credentials('replica').password}",
        ]
        if primary is not None:
            lines.append(f"replicaof {primary.settings.host} {primary.port}")
        write_private(node.settings.conf, "\n".join(lines) + "\n")
        write_private(conf_dir / "users.acl", acl.read_text() + extra.read_text())

    def _wait_until_watched(self, timeout: float) -> None:
        """Until every sentinel sees the primary, a replica and its two peers: a failover
        needs all three (a sentinel learns its peers from their hello messages)."""
        if not processes.wait_until(self._watched, timeout, interval=0.1):
            raise RedisUnavailable(
                f"the sentinels did not all see the primary, its replica and each other within "
                f"{timeout:.0f}s; see {self.redis_dir}/sentinel-*/sentinel.log"
            )

    def _watched(self) -> bool:
        if not all(_linked(node) for node in self.nodes()):
            return False
        for state in self.clients.sentinel_states():
            if state is None or int(state.get("num-other-sentinels", 0)) < 2:
                return False
            if int(state.get("num-slaves", 0)) < 1 or "s_down" in str(state.get("flags", "")):
                return False
        return True

    def stop(self, timeout: float = 60.0) -> bool:
        """Sentinels first (none may fail over while the nodes stop), then each node by
        SHUTDOWN (its AOF fsync'd); True when anything was stopped."""
        stopped = False
        for sentinel in self.sentinels():
            stopped |= sentinel.stop(timeout)
        for node in self.nodes():
            stopped |= node.stop(timeout)
        return stopped

    def status(self) -> dict[str, Any]:
        """Every process, its pid and whether it serves, each node's role, the primary."""
        primary = self.primary()
        nodes = []
        for node in self.nodes():
            serving = node.is_serving()
            nodes.append(
                {
                    "node": node.directory.name,
                    "address": node.address,
                    "pid": node.pid(),
                    "running": serving,
                    "role": _role(node) if serving else None,
                    "primary": primary == (node.settings.host, node.port),
                }
            )
        sentinels = [
            {"sentinel": s.directory.name, "address": s.address, "pid": s.pid()}
            for s in self.sentinels()
        ]
        return {
            "mode": "sentinel",
            "master_name": self.settings.sentinel_master,
            "primary": f"{primary[0]}:{primary[1]}" if primary else None,
            "nodes": nodes,
            "sentinels": sentinels,
        }


def wait_for_new_primary(
    topology: SentinelTopology, old: tuple[str, int], timeout: float
) -> tuple[str, int]:
    """Until the sentinels name a primary other than ``old`` and it takes writes."""
    found: list[tuple[str, int]] = []

    def promoted() -> bool:
        now = topology.primary()
        if now is None or now == old:
            return False
        found.append(now)
        return topology.is_serving()

    if not processes.wait_until(promoted, timeout, interval=0.05):
        raise RedisUnavailable(f"no replica was promoted within {timeout:.0f}s")
    return found[-1]


def _role(node: ManagedRedis) -> str | None:
    try:
        return str(node.client("admin").info("replication").get("role"))
    except CONNECTION_ERRORS:
        return None


def _linked(node: ManagedRedis) -> bool:
    """A primary, or a replica whose link to its primary is up (its first sync done)."""
    try:
        info = node.client("admin").info("replication")
    except CONNECTION_ERRORS:
        return False
    return info.get("role") == "master" or info.get("master_link_status") == "up"


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
