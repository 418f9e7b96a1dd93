"""The Redis Cluster topology: three primaries and three replicas that share the hash
slots, and the client that reaches the primary of one partition's slot.

Locally (``skybuffer redis start --mode cluster``) each node is a ``ManagedRedis`` in
``{data_dir}/redis/cluster-{1..6}``, started from a copy of the committed redis.conf (AOF
everysec, the same ACL users, 0600/0700 files) that ends with the cluster directives: its
own ``nodes.conf``, an explicit bus port (recorded like every port, so it is free and in
the data dir's range), a short node timeout, and the ``replica`` user replication logs in
as. The first start joins them with ``redis-cli --cluster create --cluster-replicas 1``
(the admin password in its environment, never in its arguments); later starts find the
cluster in each node's ``nodes.conf``.

skybuffer keeps every transaction inside one partition's hash-tagged prefix
(buffer/partitions.py), so a partition's keys live in one slot, on one primary. Its
client (``client(prefix)``) is a plain ``redis.Redis`` whose connections look up the
slot's primary (CLUSTER SLOTS) each time they connect: the whole pipeline keeps using
the one client type it knows. After a failover the old primary refuses (connection
refused, or MOVED once it is back as a replica); that becomes a ConnectionError, the
transient outage the ingester and the DataWriter already wait out, and the next
connection finds the promoted replica. A replica that lagged is a Redis that forgot,
detected by the cursor and the ledger as after a crash.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from skybuffer import processes
from skybuffer.buffer.server import ManagedRedis, no_retry
from skybuffer.buffer.users import USERS
from skybuffer.datadir import CLUSTER_PORTS, claim, port_of, recorded_topology
from skybuffer.errors import ConfigError, MissingBinaryError, RedisUnavailable
from skybuffer.privilege import make_private, program_env, write_private
from skybuffer.settings import RedisSettings

NODES = 6
"""Three primaries, each with one replica."""
NODE_USERS = (*USERS, "replica")
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError)
MOVED_ERRORS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


class ClusterTopology:
    """The local cluster of a data dir, or an external one (``redis.cluster_nodes``)."""

    def __init__(self, settings: RedisSettings, redis_dir: Path) -> None:
        self.settings = settings
        self.redis_dir = redis_dir
        self.data_dir = redis_dir.parent
        self.secrets_dir = redis_dir / "secrets"
        self._ports = recorded_topology(self.data_dir)[1]

    @property
    def external(self) -> bool:
        return bool(self.settings.cluster_nodes)

    def nodes(self) -> list[ManagedRedis]:
        return [self._node(i) for i in range(1, NODES + 1)]

    def _node(self, number: int) -> ManagedRedis:
        port = port_of(self.settings.port, "redis") if number == 1 else self._port(number)
        directory = self.redis_dir / f"cluster-{number}"
        settings = self.settings.model_copy(
            update={"port": port, "conf": directory / "conf" / "redis.conf"}
        )
        return ManagedRedis(settings, directory, secrets_dir=self.secrets_dir, users=NODE_USERS)

    def _port(self, number: int, what: str = "node") -> int:
        name = f"cluster_{what}_{number}"
        return port_of(self._ports.get(name), f"the cluster's {name}")

    def addresses(self) -> list[tuple[str, int]]:
        """Every node's address: the startup nodes a client asks for the slot map."""
        if self.external:
            return [_host_port(a) for a in self.settings.cluster_nodes]
        return [(node.settings.host, node.port) for node in self.nodes()]

    def credentials(self, user: str) -> tuple[str, str]:
        if self.external:
            if self.settings.password is None:
                raise ConfigError(
                    "redis.cluster_nodes is set but redis.password is not: set "
                    "SKYBUFFER_REDIS__PASSWORD to the 'skybuffer' user's password"
                )
            return "skybuffer", self.settings.password.get_secret_value()
        creds = self.nodes()[0].credentials(user)
        return creds.username, creds.password

    def client(self, user: str = "skybuffer", prefix: str | None = None) -> redis.Redis:
        """A client of the primary that holds ``prefix``'s hash slot (default: the first
        partition's), following failovers."""
        username, password = self.credentials(user)
        slot = key_slot((prefix or self.settings.prefix + "{p0-0}:").encode())
        locator = SlotLocator(self.addresses(), slot, username, password)
        pool = redis.ConnectionPool(
            connection_class=SlotConnection,
            locator=locator,
            username=username,
            password=password,
            socket_timeout=self.settings.socket_timeout_seconds,
            socket_connect_timeout=2,
            retry=no_retry(),
        )
        return redis.Redis(connection_pool=pool)

    def state(self) -> dict[str, Any] | None:
        """CLUSTER INFO of the first node that answers (None: none does)."""
        for host, port in self.addresses():
            try:
                return dict(self._admin(host, port).cluster("info"))
            except (*CONNECTION_ERRORS, redis.ResponseError):
                continue
        return None

    def is_serving(self) -> bool:
        state = self.state()
        return state is not None and state.get("cluster_state") == "ok"

    @property
    def address(self) -> str:
        state = self.state()
        health = state.get("cluster_state") if state else "no node answers"
        return f"cluster of {len(self.addresses())} nodes (state {health})"

    def _admin(self, host: str, port: int) -> redis.Redis:
        username, password = self.credentials("admin")
        return redis.Redis(
            host=host,
            port=port,
            username=username,
            password=password,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=no_retry(),
            decode_responses=True,
        )

    def start(self) -> bool:
        """Start every node not running, create the cluster at the first start, and return
        once its state is ok; True when this call started something."""
        if self.external:
            raise ConfigError("redis.cluster_nodes names an external cluster: none is started")
        if shutil.which("redis-server") is None:
            raise MissingBinaryError("redis-server", "redis-server")
        self._ports = claim(self.data_dir, list(CLUSTER_PORTS), self.redis_dir)
        make_private(self.redis_dir)
        started = False
        for number, node in enumerate(self.nodes(), start=1):
            if not node.is_serving():
                self._write_conf(node, self._port(number, "bus"))
            started |= node.start()
        if not self._formed():
            self._create()
        self._wait_until_ok(self.settings.start_timeout_seconds)
        return started

    def _write_conf(self, node: ManagedRedis, bus_port: int) -> None:
        """The committed redis.conf and users.acl, plus this node's cluster lines."""
        conf_dir = node.settings.conf.parent
        make_private(node.directory)
        make_private(conf_dir)
        committed = self.settings.conf
        acl = committed.parent / "users.acl"
        replica = committed.parent / "users-sentinel.acl"
        for path in (committed, acl, replica):
            if not path.exists():
                raise ConfigError(f"{path} is missing (it belongs beside redis.conf)")
        replica_line = next(
            line for line in replica.read_text().splitlines() if line.startswith("user replica ")
        )
        lines = [
            committed.read_text(),
            "# --- cluster node (later lines win) ---",
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-port {bus_port}",
            f"cluster-node-timeout {self.settings.cluster_node_timeout_ms}",
            "cluster-require-full-coverage yes",
            "repl-diskless-sync-delay 0",
            "masteruser replica",
            f"masterauth {node.credentials('replica').password}",
        ]
        write_private(node.settings.conf, "\n".join(lines) + "\n")
        write_private(conf_dir / "users.acl", acl.read_text() + replica_line + "\n")

    def _formed(self) -> bool:
        state = self.state()
        return state is not None and int(state.get("cluster_known_nodes", 1)) >= NODES

    def _create(self) -> None:
        """``redis-cli --cluster create``: slots spread evenly, a replica per primary."""
        binary = shutil.which("redis-cli")
        if binary is None:
            raise MissingBinaryError("redis-cli", "redis-tools")
        username, password = self.credentials("admin")
        nodes = [f"{host}:{port}" for host, port in self.addresses()]
        args = [binary, "--user", username, "--cluster", "create", *nodes]
        args += ["--cluster-replicas", "1", "--cluster-yes", "--no-auth-warning"]
        env = {**program_env(), "REDISCLI_AUTH": password}
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise RedisUnavailable(f"redis-cli --cluster create failed: {tail}")

    def _wait_until_ok(self, timeout: float) -> None:
        if not processes.wait_until(self._all_ok, timeout, interval=0.1):
            raise RedisUnavailable(
                f"the cluster's state was not ok on every node within {timeout:.0f}s; see "
                f"{self.redis_dir}/cluster-*/redis.log"
            )

    def _all_ok(self) -> bool:
        for host, port in self.addresses():
            try:
                if self._admin(host, port).cluster("info").get("cluster_state") != "ok":
                    return False
            except (*CONNECTION_ERRORS, redis.ResponseError):
                return False
        return True

    def stop(self, timeout: float = 60.0) -> bool:
        """SHUTDOWN every node (each AOF fsync'd); True when anything was stopped."""
        stopped = False
        for node in self.nodes():
            stopped |= node.stop(timeout)
        return stopped

    def status(self) -> dict[str, Any]:
        """Every node: pid, whether it serves, its role and slots; the cluster's state."""
        state = self.state()
        nodes = []
        for node in self.nodes():
            serving = node.is_serving()
            role, slots = _role_and_slots(self, node) if serving else (None, [])
            nodes.append(
                {
                    "node": node.directory.name,
                    "address": node.address,
                    "pid": node.pid(),
                    "running": serving,
                    "role": role,
                    "slots": slots,
                }
            )
        return {
            "mode": "cluster",
            "cluster_state": state.get("cluster_state") if state else None,
            "nodes": nodes,
        }


class SlotLocator:
    """Which node holds one slot as primary, asked of the startup nodes (CLUSTER SLOTS)."""

    def __init__(
        self, startup: list[tuple[str, int]], slot: int, username: str, password: str
    ) -> None:
        self.startup, self.slot = startup, slot
        self.username, self.password = username, password
        self._primary: tuple[str, int] | None = None

    def primary(self) -> tuple[str, int]:
        if self._primary is None:
            self._primary = self._lookup()
        return self._primary

    def forget(self) -> None:
        """The cached primary failed: ask the cluster again at the next connection."""
        self._primary = None

    def _lookup(self) -> tuple[str, int]:
        for host, port in self.startup:
            try:
                ranges = self._ask(host, port)
            except (*CONNECTION_ERRORS, redis.ResponseError):
                continue
            for first, last, primary, *_ in ranges:
                if first <= self.slot <= last:
                    address = primary[0]
                    return (address.decode() if isinstance(address, bytes) else address), int(
                        primary[1]
                    )
        raise redis.ConnectionError(f"no cluster node names a primary for slot {self.slot}")

    def _ask(self, host: str, port: int) -> list[Any]:
        probe = redis.Redis(
            host=host,
            port=port,
            username=self.username,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=1,
            retry=no_retry(),
        )
        try:
            return list(probe.execute_command("CLUSTER SLOTS"))
        finally:
            probe.close()


class SlotConnection(redis.Connection):
    """A connection to the primary of one slot: looked up at each connect; a refusal that
    means the slot moved (MOVED, CLUSTERDOWN, TRYAGAIN) closes it and is a ConnectionError."""

    def __init__(self, **kwargs: Any) -> None:
        self.locator: SlotLocator = kwargs.pop("locator")
        super().__init__(**kwargs)

    def connect(self) -> None:
        if self._sock:
            return
        self.host, self.port = self.locator.primary()
        try:
            super().connect()
        except redis.ConnectionError:
            self.locator.forget()
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except MOVED_ERRORS as exc:
            self.disconnect()
            self.locator.forget()
            raise redis.ConnectionError(f"slot {self.locator.slot} moved: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError):
            self.locator.forget()
            raise


def _role_and_slots(topology: ClusterTopology, node: ManagedRedis) -> tuple[str | None, list[str]]:
    """The node's role, and the slot ranges it serves as primary ("0-5460")."""
    try:
        admin = topology._admin(node.settings.host, node.port)
        role = str(admin.info("replication").get("role"))
        ranges = admin.execute_command("CLUSTER SLOTS")
    except (*CONNECTION_ERRORS, redis.ResponseError):
        return None, []
    mine = [f"{low}-{high}" for low, high, primary, *_ in ranges if int(primary[1]) == node.port]
    return role, mine


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
