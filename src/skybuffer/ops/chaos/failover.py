"""`skybuffer chaos failover --mode sentinel|cluster`: the primary is killed mid-run, a
replica is promoted, and every event still reaches the lake exactly once. This module
runs sentinel mode and reports both; cluster mode's run is ops/chaos/failover_cluster.py.

On a scratch data dir, a local sentinel topology (buffer/sentinel.py: primary, replica,
three sentinels) holds the buffer, and the real pipeline runs against it through the
sentinels: an ingester (with its lease) reading synthetic events through the local
Jetstream-protocol server (``jetstream``) or straight from the file (``replay``), and a
DataWriter draining every half second into a scratch lake. Once the writer has committed
part of the run, the primary gets SIGKILL. Nobody restarts it: the sentinels promote the
replica, the pipeline's clients find it by themselves, and whatever the replica had not
received yet is a Redis that forgot (the cursor's batch check, the ledger). The run goes
on until every source event is confirmed and drained.

Counted by event identity, as `chaos forget` does: ``lost`` = source events not in the
lake once, ``duplicated`` = extra copies; ``failovers`` = primaries the sentinels named
after the first; ``promotion_seconds`` = kill -> a new primary takes commands;
``recovery_seconds`` = kill -> the ingester's batches land again.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from skybuffer import processes
from skybuffer.buffer.sentinel import SentinelTopology, wait_for_new_primary
from skybuffer.constants import Keys
from skybuffer.datadir import free_port
from skybuffer.ops.chaos.failover_cluster import ClusterFailoverRun
from skybuffer.ops.chaos.pipeline_run import SOURCES, PipelineRun, batches_landed, confirmed
from skybuffer.ops.report import Report, Table
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.lanes import Lanes
from skybuffer.settings import Settings, load_settings

MODES = ("sentinel", "cluster")
KILL_AT = 0.3
"""The primary is killed once this share of the events is confirmed (and some drained)."""
GATE_AT = 0.8
"""The source waits at this share until a new primary serves: the ingester must still
write after the failover, or it would never learn what the promoted replica lacks."""
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
DEADLINE_SECONDS = 300.0
"""Bounds a hang only: a run not finished by then is reported as failed."""


def run_chaos_failover(
    settings: Settings,
    events: int = 40_000,
    rate: float = 3_000.0,
    source: str = "jetstream",
    mode: str = "sentinel",
    replica_lag: float = 0.0,
) -> Report:
    """One failover run on its own scratch data dir, reported and written."""
    result = failover_once(settings, source, events, rate, mode, replica_lag)
    params = {"mode": mode, "source": source, "events": events, "rate": rate}
    return _report(result, {**params, "replica_lag": replica_lag}).write(settings.reports_dir)


def failover_once(
    base: Settings,
    source: str,
    events: int,
    rate: float,
    mode: str = "sentinel",
    replica_lag: float = 0.0,
) -> dict[str, Any]:
    """``replica_lag`` (cluster mode): seconds of the primary's writes its replica misses
    (failover_cluster.py)."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}")
    if source not in SOURCES:
        raise ValueError(f"--source must be one of {', '.join(SOURCES)}")
    if replica_lag and mode != "cluster":
        raise ValueError("--replica-lag applies to --mode cluster only")
    with tempfile.TemporaryDirectory(prefix="skybuffer-failover-") as scratch:
        if mode == "cluster":
            run: PipelineRun = ClusterFailoverRun(
                base, Path(scratch), source, events, rate, replica_lag=replica_lag
            )
        else:
            run = FailoverRun(base, Path(scratch), source, events, rate)
        return run.execute()


class FailoverRun(PipelineRun):
    """One pipeline on a scratch sentinel topology, and the kill in the middle of it."""

    name = "failover"
    gate_at = GATE_AT
    deadline_seconds = DEADLINE_SECONDS

    def __init__(self, base: Settings, scratch: Path, source: str, events: int, rate: float):
        super().__init__(scratch, source, events, rate, seed=29)
        self.settings = load_settings(
            data_dir=scratch / "var",
            redis={
                "mode": "sentinel",
                "url": None,
                "sentinels": [],
                "port": free_port(),
                "conf": base.redis.conf,
                "sentinel_down_after_ms": 1000,
                "sentinel_failover_timeout_ms": 5000,
                "socket_timeout_seconds": 2.0,
            },
            metrics={"ingest_port": 0, "writer_port": 0},
            writer={"batch_events": 5_000, "lease_seconds": 5},
            ingest={"batch_events": 500, "linger_seconds": 0.05, "lease_seconds": 5},
        )
        self.topology = SentinelTopology(self.settings.redis, self.settings.redis_dir)

    def start_buffer(self) -> None:
        self.topology.start()

    def stop_buffer(self) -> None:
        self.topology.stop(timeout=30)

    def client(self, user: str = "skybuffer") -> redis.Redis:
        return self.topology.client(user)

    def fault(self, ingester: Ingester | Lanes) -> dict[str, Any]:
        """SIGKILL the primary once the writer committed, time the promotion and the
        ingester's first batch on the new primary."""
        admin = self.topology.client("admin")
        keys = Keys(self.settings.redis.prefix)
        self.wait(lambda: confirmed(ingester) >= self.events * KILL_AT, "events ingested")
        self.wait(lambda: bool(admin.hgetall(keys.writer_committed)), "a DataWriter commit")
        old = self.topology.primary()
        assert old is not None, "the sentinels name no primary"
        node = next(n for n in self.topology.nodes() if n.port == old[1])
        pid = node.pid()
        assert pid is not None, "the primary has no pid"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        processes.wait_gone(pid, 10)
        landed_at_kill = batches_landed(ingester)  # once gone: a reply in flight landed
        new = wait_for_new_primary(self.topology, old, DEADLINE_SECONDS)
        promoted_at = time.monotonic()
        self.fault_over.set()
        self.wait(lambda: batches_landed(ingester) > landed_at_kill, "batches landing again")
        return {
            "old_primary": f"{old[0]}:{old[1]}",
            "new_primary": f"{new[0]}:{new[1]}",
            "failovers": 1 if new != old else 0,
            "promotion_seconds": round(promoted_at - killed_at, 2),
            "recovery_seconds": round(time.monotonic() - killed_at, 2),
        }


def _columns(result: dict[str, Any]) -> dict[str, Any]:
    """The table's columns (the JSON keeps the addresses too; a cluster's table names
    the partition and the node killed)."""
    return {k: v for k, v in result.items() if k not in ("old_primary", "new_primary")}


_SENTINEL_NOTES = [
    "failovers: primaries the sentinels promoted after the SIGKILL (must be 1).",
    "forgotten: events the killed primary had confirmed that the promoted replica had "
    "not received; the ingester rewound its source and read them again.",
    "promotion_seconds: SIGKILL -> the new primary takes commands (down-after 1 s, "
    "then the sentinels' election); recovery_seconds: SIGKILL -> the ingester's "
    "batches land on it.",
]
_CLUSTER_NOTES = [
    "partition, killed_node: the partition whose slot's primary got SIGKILL, and that "
    "node (cluster-N in the data dir); the JSON has its address (old_primary) and the "
    "replica's promoted in its place (new_primary).",
    "failovers: nodes serving slots as primary after the SIGKILL that did not before "
    "(must be 1: the killed node's replica, elected by the other primaries).",
    "forgotten: events the killed primary had confirmed that its replica had not "
    "received; that partition's lane rewound its own source and read them again.",
    "promotion_seconds: SIGKILL -> the partition's slot takes commands again (node "
    "timeout 1 s, then the replica's election); recovery_seconds: SIGKILL -> that "
    "partition's lane lands batches again.",
]


def _report(result: dict[str, Any], params: dict[str, Any]) -> Report:
    mode = params["mode"]
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["failovers"] == 1
    notes = [
        "lost and duplicated count source events by identity (did, collection, rkey, "
        "time_us) against the lake's rows; both must be 0.",
        *(_CLUSTER_NOTES if mode == "cluster" else _SENTINEL_NOTES),
        "replayed: copies of events the lake already held that its replay guard dropped.",
    ]
    data = {
        "params": params,
        "results": result,
        "ok": ok,
    }
    killed = "one primary" if mode == "cluster" else "the primary"
    return Report(
        command="chaos-failover",
        title=f"skybuffer chaos failover --mode {mode}: {killed} is killed mid-run",
        data=data,
        tables=[Table("chaos failover", [{"mode": mode, **_columns(result)}])],
        notes=notes,
        exit_code=0 if ok else 1,
    )
