"""The Grafana dashboards: valid JSON, and every panel's PromQL runs and returns data.

Grafana is not packaged for Debian, so the dashboards are checked where they meet the
rest of the system: a real Prometheus must accept each panel's query, and return data
once it scrapes a real redis_exporter (watching skybuffer streams made with XADD) and
skybuffer's own registry (served from this test process with values set).

Also covers: skybuffer.observability.exporter, skybuffer.observability.writer_stats
(through the behaviour above).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import start_http_server

from skybuffer import metrics
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES, WRITER_GROUP, Keys
from skybuffer.observability import writer_stats
from skybuffer.observability.exporter import PipelineCollector
from skybuffer.observability.stack import stack_down, stack_up
from skybuffer.settings import Settings, load_settings

from .harness import (
    DASHBOARDS,
    TOPOLOGY_ONLY,
    alert_rules,
    fast_config,
    free_port,
    panel_queries,
    query,
    require,
    stack_settings,
    stop_redis,
    wait_for,
)


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / name).read_text()))


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard, variable, metric) of each label_values(metric, label) variable."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                match = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
                assert match, variable["definition"]
                found.append((board["title"], f"${variable['name']}", match.group(1)))
    return found


def test_there_are_two_dashboards_with_unique_ids_and_the_provisioned_datasource() -> None:
    boards = [load("redis-buffer.json"), load("datawriter.json")]
    assert sorted(b["title"] for b in boards) == ["DataWriter", "Redis buffer"]
    assert len({b["uid"] for b in boards}) == 2
    for board in boards:
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), board["title"]
        datasource = board["templating"]["list"][0]
        assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["targets"], panel["title"]
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert not re.search(r"\$[A-Za-z_]", " ".join(expr for _, _, expr in panel_queries()))


@pytest.mark.parametrize(
    ("board", "needles"),
    [
        (
            "redis-buffer.json",
            [
                "redis_memory_max_bytes", "redis_evicted_keys_total",
                "redis_commands_processed_total", "redis_latency_percentiles_usec",
                "redis_connected_clients", "redis_aof_last_write_status", "redis_stream_length",
                "redis_stream_group_messages_pending", "skybuffer_buffer_oldest_age_seconds",
                'redis_instance_info{instance=~".*",role="master"}', "redis_master_link_up",
                "redis_connected_slave_offset_bytes", "redis_cluster_state",
                "redis_sentinel_master_ckquorum_status", "sum by (instance, node)",
            ],
        ),
        (
            "datawriter.json",
            [
                "skybuffer_writer_runs_total", "skybuffer_writer_run_duration_seconds_bucket",
                "vector(240)", "skybuffer_writer_rows_total", "skybuffer_writer_bytes_total",
                'outcome=~"failure|timeout"', "skybuffer_writer_last_success_timestamp_seconds",
                "skybuffer_lake_bytes",
                "max by (partition) (skybuffer_partition_oldest_age_seconds)",
                "sum by (partition) (skybuffer_partition_buffer_events)",
                "skybuffer_seal_oldest_open_hour_age_seconds", "skybuffer_seal_hours_total",
                "skybuffer_seal_duplicates_dropped_total", "skybuffer_lake_erasures_pending",
            ],
        ),
    ],
)  # fmt: skip
def test_each_dashboard_shows_what_its_readers_need(board: str, needles: list[str]) -> None:
    title = load(board)["title"]
    exprs = " ".join(expr for dashboard, _, expr in panel_queries() if dashboard == title)
    missing = [needle for needle in needles if needle not in exprs]
    assert not missing, f"{board} has no panel on {missing}"


# --- against a running Prometheus ---------------------------------------------------------
def feed_redis(server: ManagedRedis, prefix: str) -> None:
    """Streams of every type with a DataWriter group that read some, plus a dead letter."""
    client, keys = server.client(), Keys(prefix)
    for type_ in TYPES:
        for n in range(3):
            client.xadd(keys.stream(type_), {"v": "1", "n": "1", "d": f"{type_}-{n}" * 50})
        client.xgroup_create(keys.stream(type_), WRITER_GROUP, id="0")
        client.xreadgroup(WRITER_GROUP, "writer-1", {keys.stream(type_): ">"}, count=1)
    client.xadd(keys.deadletter, {"reason": "invalid_json", "raw": "{", "detail": "test"})


def set_skybuffer_metrics(server: ManagedRedis, settings: Settings) -> PipelineCollector:
    """A value in every skybuffer series the dashboards read: the ingester's in-process
    metrics, and the DataWriter's figures the way they really arrive (kept in Redis,
    exported by the serving process's collector)."""
    now = time.time()
    client, keys = server.client(), Keys(settings.redis.prefix)
    for type_ in TYPES:
        metrics.INGEST_EVENTS.labels(type_).inc(100)
        writer_stats.record_batch(client, keys, type_, 90, 9000, 1)
        part = Path(str(settings.lake.root)) / type_ / "year=2026" / "part-1-1.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"PAR1" + b"\0" * 123456)
    for outcome, runs in (("success", 3), ("failure", 1), ("timeout", 1)):
        for _ in range(runs):
            writer_stats.record_run(client, keys, outcome, 42.0)
    writer_stats.record_run(client, keys, "success", 42.0)
    metrics.WRITER_UP.set(1)
    metrics.INGEST_UP.set(1)
    metrics.INGEST_BACKPRESSURE.set(0)
    metrics.INGEST_REDIS_UP.set(1)
    metrics.INGEST_LAST_EVENT_TIME.set(now)
    metrics.DEADLETTER_EVENTS.labels("invalid_json").inc(1)
    metrics.SOURCE_CONNECTED.set(1)
    metrics.SOURCE_LAG_SECONDS.set(0.5)
    metrics.SOURCE_RECONNECTS.labels("closed").inc()
    metrics.SOURCE_OVERLAP_DROPPED.inc(3)
    metrics.SOURCE_BYTES.inc(100_000)
    metrics.INGEST_BYTES.inc(80_000)
    metrics.INGEST_PENDING_EVENTS.set(0)
    metrics.INGEST_SPOOL_BYTES.set(0)
    metrics.INGEST_BATCH_SECONDS.observe(0.02)
    collector = PipelineCollector(client, keys, settings.lake.root)
    metrics.REGISTRY.register(collector)
    return collector


@contextlib.contextmanager
def serving_registry(port: int) -> Iterator[None]:
    """skybuffer's REGISTRY served from this process, as the ingester and writer serve it."""
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus_with_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fast stack scraping a fed Redis and skybuffer's registry; shared by this module."""
    require("redis-server", "prometheus", "prometheus-alertmanager", "prometheus-redis-exporter")
    root, port = tmp_path_factory.mktemp("dashboards"), free_port()
    settings = load_settings(
        data_dir=root / "var",
        redis={"port": free_port()},
        metrics={"ingest_port": port, "writer_port": port},
    )
    conf = stack_settings(fast_config(root / "config"))
    server = ManagedRedis(settings.redis, settings.redis_dir)
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(serving_registry(port))
        cleanup.callback(stop_redis, server)
        server.start()
        feed_redis(server, settings.redis.prefix)
        collector = set_skybuffer_metrics(server, settings)
        cleanup.callback(metrics.REGISTRY.unregister, collector)
        cleanup.callback(stack_down, settings, conf)
        prometheus = stack_up(settings, conf)["prometheus"]
        wait_for("Prometheus to scrape the exporter and skybuffer", lambda: _all_up(prometheus))
        yield prometheus


def _all_up(prometheus: str) -> bool:
    result = query(prometheus, "up == 1")["data"]["result"]
    jobs = {series["metric"]["job"] for series in result}
    return {"redis", "skybuffer_ingest", "skybuffer_writer"} <= jobs


def test_every_panel_query_is_accepted_by_prometheus_and_returns_data(
    prometheus_with_data: str,
) -> None:
    queries = panel_queries() + variable_queries()
    rejected = [
        (board, panel, expr, answer.get("error"))
        for board, panel, expr in queries
        if (answer := query(prometheus_with_data, expr))["status"] != "success"
    ]
    assert not rejected, f"Prometheus rejected: {rejected}"

    # Panels on replication, the cluster, sentinels and partitions have no data on one
    # Redis: test_redis_targets.py checks them on a local cluster and sentinel topology.
    remaining = [q for q in queries if not TOPOLOGY_ONLY.search(q[2])]

    def all_have_data() -> bool:
        remaining[:] = [
            q for q in remaining if not query(prometheus_with_data, q[2])["data"]["result"]
        ]
        return not remaining

    try:
        wait_for("every panel to return data", all_have_data)
    except pytest.fail.Exception:
        pytest.fail(f"panels without data: {remaining}")


def test_every_redis_metric_the_alerts_use_is_exported_by_this_redis_exporter(
    prometheus_with_data: str,
) -> None:
    """Catches a renamed metric in another redis_exporter version (the rules would never fire).
    redis_errors_total appears with Redis' first error: the end-to-end test fills Redis.
    Replication, cluster and sentinel series: test_redis_targets.py, on those topologies."""
    used = {name for rule in alert_rules() for name in re.findall(r"\bredis_\w+", rule["expr"])}
    used = {name for name in used if not TOPOLOGY_ONLY.search(name)}
    exported = query(prometheus_with_data, 'group by (__name__) ({__name__=~"redis_.+"})')
    names = {series["metric"]["__name__"] for series in exported["data"]["result"]}
    assert used - {"redis_errors_total"} <= names, used - names
