"""`skybuffer chaos failover --mode cluster`: the primary holding one partition's slot is
killed mid-run, the cluster promotes its replica, and every event still reaches the lake
exactly once.

On a scratch data dir, a local Redis Cluster (buffer/cluster.py: three primaries, a
replica each) holds a partitioned buffer (buffer/partitions.py: three hash-tagged
prefixes, one per primary), and the real partitioned pipeline runs against it: one ingest
lane per partition (pipeline/lanes.py), each reading its own connection to the local
Jetstream-protocol server (``jetstream``) or the file (``replay``), and a DataWriter per
partition (pipeline/writers.py), the partitions drained side by side every half second.
Once part of the run is confirmed and the victim partition's writer has committed, the
primary of that partition's slot gets SIGKILL. Nobody restarts it: the other primaries
mark it failed after ``cluster_node_timeout_ms`` and its replica is elected in its place;
each lane's client looks its slot up again (CLUSTER SLOTS) and finds it. Whatever the
replica had not received yet is a Redis that forgot, for that partition only (its lane's
cursor check rewinds its own source; its writer's ledger).

Every lane's source is held back at ``GATE_AT`` of the events until the new primary
serves, as in sentinel mode: the victim's lane must still write after the failover, or
it would never learn what the promoted replica lacks.

With ``replica_lag`` L > 0 the victim's replica is cut off L seconds before the kill (the
primary refuses its login and drops its link): the replica promoted lacks the primary's
last L seconds of writes, the failover of a replica that lagged. The victim's lane then finds
its cursor behind what it was told (BufferForgot), rewinds its own source and reads
them again; its DataWriter finds its ledger behind the lake and drops the replayed
copies. Without it the replica is usually complete (``forgotten`` 0).

Figures: ``failovers`` = nodes that serve slots as primary after the kill and did not
before; ``promotion_seconds`` = kill -> the victim's slot takes commands again;
``recovery_seconds`` = kill -> the victim partition's lane lands batches again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from skybuffer import processes
from skybuffer.buffer.cluster import ClusterTopology, SlotLocator
from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.server import ManagedRedis
from skybuffer.datadir import free_port
from skybuffer.ops.chaos.pipeline_run import PipelineRun, batches_landed, confirmed
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.lanes import Lanes, PartitionView
from skybuffer.pipeline.writers import Writers
from skybuffer.settings import Settings, load_settings

PARTITIONS = 3
"""One partition per primary (the cluster mode's default)."""
VICTIM = 1
"""The partition whose primary is killed (its slot lies in the middle primary's share)."""
KILL_AT = 0.3
"""The primary is killed once this share of the events is confirmed (as sentinel mode)."""
GATE_AT = 0.8
"""Every lane's source waits at this share until the victim's slot serves again."""
DEADLINE_SECONDS = 300.0
"""Bounds a hang only: a run not finished by then is reported as failed."""


class ClusterFailoverRun(PipelineRun):
    """The partitioned pipeline on a scratch cluster, and one primary killed under it."""

    name = "failover"
    gate_at = GATE_AT
    deadline_seconds = DEADLINE_SECONDS

    def __init__(
        self,
        base: Settings,
        scratch: Path,
        source: str,
        events: int,
        rate: float,
        victim: int = VICTIM,
        replica_lag: float = 0.0,
    ) -> None:
        super().__init__(scratch, source, events, rate, seed=29)
        self.settings = load_settings(
            data_dir=scratch / "var",
            redis={
                "mode": "cluster",
                "url": None,
                "cluster_nodes": [],
                "partitions": PARTITIONS,
                "port": free_port(),
                "conf": base.redis.conf,
                "cluster_node_timeout_ms": 1000,
                "socket_timeout_seconds": 2.0,
            },
            metrics={"ingest_port": 0, "writer_port": 0},
            writer={"batch_events": 5_000, "lease_seconds": 5, "partition_threads": PARTITIONS},
            ingest={"batch_events": 500, "linger_seconds": 0.05, "lease_seconds": 5},
        )
        self.partitions = Partitions.of_settings(self.settings.redis)
        if not 0 <= victim < self.partitions.count:
            raise ValueError(f"the victim partition must be 0..{self.partitions.count - 1}")
        self.victim, self.replica_lag = victim, replica_lag
        self.topology = ClusterTopology(self.settings.redis, self.settings.redis_dir)

    def start_buffer(self) -> None:
        self.topology.start()

    def stop_buffer(self) -> None:
        self.topology.stop(timeout=30)

    def client(self, user: str = "skybuffer", partition: int = 0) -> redis.Redis:
        """A client of the primary of ``partition``'s slot, following failovers."""
        return self.topology.client(user, prefix=self.partitions.prefix(partition))

    def ingester(self, url: str | None) -> Lanes:
        """A lane per partition, each over its own gated connection to the source."""
        lanes = []
        for p in range(self.partitions.count):
            view = PartitionView(self.source(url), self.partitions, p)
            keys, name = self.partitions.keys(p), self.partitions.name(p)
            lanes.append(self.lane(self.client(partition=p), keys, view, name))
        return Lanes(lanes)

    def drain_loop(self) -> None:
        """Every partition's DataWriter under its own lease, drained side by side."""
        writers = Writers(self.settings)
        try:
            self.rounds(lambda: writers.drain_once()[0])
        finally:
            writers.release()
            writers.close()

    def buffered(self) -> int:
        """Events in every partition's buffer now (by their counters)."""
        total = 0
        for p in range(self.partitions.count):
            counts = self.client("admin", p).hgetall(self.partitions.keys(p).event_counts)
            total += sum(int(v) for v in counts.values())
        return total

    def fault(self, ingester: Ingester | Lanes) -> dict[str, Any]:
        """SIGKILL the victim partition's primary once its writer committed; time the
        promotion of its replica and the victim lane's first batch after it."""
        assert isinstance(ingester, Lanes)
        lane = ingester.lanes[self.victim]
        self._wait_for_kill_point(ingester)
        before, old = self._primaries(), self._primary_of(self.victim)
        node = next(n for n in self.topology.nodes() if n.port == old[1])
        if self.replica_lag > 0:
            self._cut_replica(node)
            time.sleep(self.replica_lag)
        killed_at = self._kill(node)
        landed_at_kill = batches_landed(lane)  # once gone: a reply in flight landed
        promoted_at = self._wait_until_served()
        self.fault_over.set()
        name = self.partitions.name(self.victim)
        self.wait(lambda: batches_landed(lane) > landed_at_kill, f"{name}'s batches landing")
        recovered_at = time.monotonic()
        new = self._new_primary(old)
        return {
            "partition": name,
            "killed_node": node.directory.name,
            "old_primary": f"{old[0]}:{old[1]}",
            "new_primary": f"{new[0]}:{new[1]}",
            "failovers": len(self._primaries() - before),
            "promotion_seconds": round(promoted_at - killed_at, 2),
            "recovery_seconds": round(recovered_at - killed_at, 2),
        }

    def _wait_for_kill_point(self, ingester: Lanes) -> None:
        """Until ``KILL_AT`` of the events are confirmed and the victim's writer has
        committed (so the lake already holds some of its events when it fails over)."""
        keys = self.partitions.keys(self.victim)
        admin = self.client("admin", self.victim)
        self.wait(lambda: confirmed(ingester) >= self.events * KILL_AT, "events ingested")
        self.wait(lambda: bool(admin.hgetall(keys.writer_committed)), "a victim's commit")

    def _wait_until_served(self) -> float:
        """Until a key command in the victim's slot is answered (by the promoted replica:
        the old primary is dead, and a node that is not the slot's primary answers MOVED
        or CLUSTERDOWN); the moment it is."""
        keys = self.partitions.keys(self.victim)
        admin = self.client("admin", self.victim)
        self.wait(lambda: admin.exists(keys.event_counts) >= 0, "the victim's slot served")
        return time.monotonic()

    def _kill(self, node: ManagedRedis) -> float:
        """SIGKILL the primary ``node``; the moment of the kill."""
        pid = node.pid()
        assert pid is not None, f"the primary {node.directory.name} has no pid"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        processes.wait_gone(pid, 10)
        return killed_at

    def _cut_replica(self, primary: ManagedRedis) -> None:
        """The primary refuses its replica's login and drops the link, while it goes on
        taking writes: what it confirms from now on, the replica never receives. (Stopping
        the replica with SIGSTOP would not do: the primary's stream waits in the loopback
        socket's buffers and reaches the replica when it resumes.)"""
        admin = primary.client("admin")
        admin.execute_command("ACL", "SETUSER", "replica", "off")
        admin.execute_command("CLIENT", "KILL", "TYPE", "replica")
        self.wait(
            lambda: int(admin.info("replication").get("connected_slaves", 0)) == 0,
            "the replica cut off",
        )

    def _new_primary(self, old: tuple[str, int]) -> tuple[str, int]:
        """The primary of the victim's slot once the cluster names one other than ``old``."""
        named: list[tuple[str, int]] = []

        def moved() -> bool:
            named.append(self._primary_of(self.victim))
            return named[-1] != old

        self.wait(moved, "the cluster to name the promoted replica")
        return named[-1]

    def _primary_of(self, partition: int) -> tuple[str, int]:
        """The node the cluster names primary of ``partition``'s slot now."""
        slot = key_slot(self.partitions.prefix(partition).encode())
        username, password = self.topology.credentials("admin")
        return SlotLocator(self.topology.addresses(), slot, username, password).primary()

    def _primaries(self) -> set[str]:
        """The addresses of the nodes that serve slots as primary now."""
        nodes = self.topology.status()["nodes"]
        return {n["address"] for n in nodes if n["role"] == "master" and n["slots"]}
