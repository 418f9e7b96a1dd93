"""A partitioned buffer end to end: one ingest lane and one DataWriter per partition put
every event in the lake exactly once; an account's events stay in one partition, in
order; a cluster primary killed mid-ingest fails over without losing or doubling an
event; a writer killed mid-drain hands its partitions to the next one.

Also covers: skybuffer.pipeline.writers, skybuffer.lake.layout (partition file names),
skybuffer.observability.status (merged_status), skybuffer.observability.exporter
(partition series)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest

from skybuffer.buffer.cluster import ClusterTopology
from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.topology import connect
from skybuffer.errors import ConfigError
from skybuffer.observability.exporter import PipelineCollector
from skybuffer.observability.status import collect_status
from skybuffer.pipeline.lanes import Lanes
from skybuffer.pipeline.runner import build_ingester
from skybuffer.pipeline.writers import drain_once
from skybuffer.settings import Settings
from tests.conftest import CLUSTER, buffered_events, stop_pid

EVENTS = 20_000


def _lake_rows(settings: Settings) -> list[dict[str, object]]:
    """Every row of the lake: identity columns and the partition its file name carries."""
    columns = ["did", "kind", "rkey", "rev", "operation", "time_us"]
    rows: list[dict[str, object]] = []
    for file in sorted(Path(str(settings.lake.root)).rglob("part-*.parquet")):
        partition = file.name.split("-")[1]
        table = ds.dataset(str(file), format="parquet").to_table(columns=columns)
        rows += [{**row, "partition": partition} for row in table.to_pylist()]
    return rows


def _scrape(settings: Settings, partitions: Partitions) -> dict[str, dict[str, float]]:
    """The DataWriter-serving process's collector over the partitions, one scrape."""
    collector = PipelineCollector(
        connect(settings.redis, settings.redis_dir, partitions.prefix(0)),
        partitions.keys(0),
        None,
        partitions,
        lambda prefix: connect(settings.redis, settings.redis_dir, prefix),
    )
    scraped: dict[str, dict[str, float]] = defaultdict(dict)
    for family in collector.collect():
        for sample in family.samples:
            scraped[sample.name][str(sorted(sample.labels.items()))] = sample.value
    return scraped


def _identity(row: dict[str, object]) -> tuple[object, ...]:
    return (row["did"], row["kind"], row["rkey"], row["rev"], row["operation"], row["time_us"])


def _assert_exactly_once(settings: Settings, expected: int) -> list[dict[str, object]]:
    rows = _lake_rows(settings)
    identities = [_identity(r) for r in rows]
    assert len(identities) == expected
    assert len(set(identities)) == expected
    homes: dict[object, set[object]] = defaultdict(set)
    for row in rows:
        homes[row["did"]].add(row["partition"])
    assert all(len(h) == 1 for h in homes.values())  # one account, one partition
    return rows


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_partitioned_buffer_puts_every_event_in_the_lake_once_and_keeps_account_order(
    topology: str,
    make_settings: Callable[..., Settings],
    start_redis: Callable[..., ManagedRedis],
    request: pytest.FixtureRequest,
) -> None:
    if topology == "cluster":
        request.getfixturevalue("cluster")
        settings = make_settings(redis=CLUSTER)
    else:
        start_redis(partitions=3)
        settings = make_settings(redis={"partitions": 3})
    ingester = build_ingester(settings, "synthetic", count=EVENTS, rate=0)
    assert isinstance(ingester, Lanes) and len(ingester.lanes) == 3
    stats = ingester.run()
    assert stats.events + stats.deadletters == EVENTS and stats.deadletters == 0
    partitions = Partitions.of_settings(settings.redis)
    seen: dict[bytes, int] = {}
    for number in range(3):
        prefix = partitions.prefix(number)
        client = connect(settings.redis, settings.redis_dir, prefix)
        for events in buffered_events(client, prefix).values():
            assert events, f"partition {number} got no events of a type"
            by_did: dict[bytes, list[int]] = defaultdict(list)
            for raw in events:
                event = orjson.loads(raw)
                by_did[event["did"].encode()].append(event["time_us"])
            for did, times in by_did.items():
                assert seen.setdefault(did, number) == number
                assert times == sorted(times)  # a stream keeps each account's order
    status = collect_status(settings)
    assert status.events == EVENTS and set(status.partitions) == {"p0", "p1", "p2"}
    scraped = _scrape(settings, partitions)
    assert sum(scraped["skybuffer_partition_buffer_events"].values()) == EVENTS
    assert sum(scraped["skybuffer_buffer_events"].values()) == EVENTS
    assert len(scraped["skybuffer_partition_buffer_events"]) == 3
    result = drain_once(settings)
    assert result.ok and result.rows == EVENTS
    _assert_exactly_once(settings, EVENTS)
    assert drain_once(settings).rows == 0
    assert collect_status(settings).events == 0


def test_cluster_primary_killed_mid_ingest_loses_and_doubles_nothing(
    cluster: ClusterTopology, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis=CLUSTER, ingest={"linger_seconds": 0.05})
    events = 30_000
    ingester = build_ingester(settings, "synthetic", count=events, rate=6_000)
    assert isinstance(ingester, Lanes)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(ingester.run()), daemon=True)
    thread.start()
    victim_lane = ingester.lanes[1]
    deadline = time.monotonic() + 60
    while victim_lane.stats.events < 2_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    port = victim_lane.producer.client.connection_pool.get_connection().port
    primary = next(n for n in cluster.nodes() if n.port == port)
    pid = primary.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert done, "ingest did not finish after the failover"
    assert drain_once(settings).ok
    _assert_exactly_once(settings, events)
    roles = {n["address"]: n["role"] for n in cluster.status()["nodes"]}
    assert roles[primary.address] is None  # still dead: its replica took over


def test_a_writer_killed_mid_drain_hands_its_partitions_to_the_next(
    cluster: ClusterTopology, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis=CLUSTER, writer={"batch_events": 5_000})
    events = 60_000
    assert build_ingester(settings, "synthetic", count=events, rate=0).run().events == events
    env = {
        **os.environ,
        "SKYBUFFER_DATA_DIR": str(settings.data_dir),
        "SKYBUFFER_REDIS__MODE": "cluster",
        "SKYBUFFER_REDIS__PORT": str(settings.redis.port),
        "SKYBUFFER_WRITER__BATCH_EVENTS": "5000",
        "SKYBUFFER_METRICS__WRITER_PORT": "0",
    }
    command = [sys.executable, "-m", "skybuffer", "write", "--loop", "--interval", "1"]
    writer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lake = Path(str(settings.lake.root))
        deadline = time.monotonic() + 60
        while not list(lake.rglob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(lake.rglob("part-*.parquet")), "the writer wrote nothing"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        stop_pid(writer.pid)
    assert collect_status(settings).events > 0  # it died with work left
    result = drain_once(settings)  # takes the dead writer's leases at once (same host)
    assert result.ok
    _assert_exactly_once(settings, events)


def test_lanes_run_apart_take_only_their_partitions_and_together_take_all(
    start_redis: Callable[..., ManagedRedis], make_settings: Callable[..., Settings]
) -> None:
    start_redis(partitions=3)
    settings = make_settings(redis={"partitions": 3})
    one = build_ingester(settings, "synthetic", count=EVENTS, rate=0, partitions=[1])
    assert isinstance(one, Lanes) and len(one.lanes) == 1
    alone = one.run().events
    assert 0 < alone < EVENTS
    status = collect_status(settings)
    assert status.partitions["p1"]["events"] == alone == status.events
    rest = build_ingester(settings, "synthetic", count=EVENTS, rate=0, partitions=[0, 2])
    assert rest.run().events == EVENTS - alone
    assert drain_once(settings).rows == EVENTS
    _assert_exactly_once(settings, EVENTS)
    with pytest.raises(ConfigError, match="3 partition"):
        build_ingester(settings, "synthetic", count=10, partitions=[3])


def test_events_of_another_partition_layout_are_never_stranded_silently(
    start_redis: Callable[..., ManagedRedis], make_settings: Callable[..., Settings]
) -> None:
    start_redis()
    plain = make_settings()
    assert build_ingester(plain, "synthetic", count=1_000, rate=0).run().events == 1_000
    partitioned = make_settings(redis={"partitions": 3})
    with pytest.raises(ConfigError, match="another partition layout"):
        build_ingester(partitioned, "synthetic", count=10, rate=0)
    with pytest.raises(ConfigError, match="set redis.partitions back"):
        drain_once(partitioned)
    assert any("'skybuffer:'" in w for w in collect_status(partitioned).warnings)
    assert drain_once(plain).rows == 1_000  # drained as the fix says, the switch is free
    assert build_ingester(partitioned, "synthetic", count=100, rate=0).run().events == 100
