"""End to end: Redis -> redis_exporter -> Prometheus -> Alertmanager -> a stand-in for Slack.

Real binaries on free loopback ports, started by ``skybuffer stack up``'s functions on a
copy of the committed config in which only intervals and ``for:`` are shortened. The
Slack webhook URL reaches Alertmanager through the secret file (``api_url_file``) only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, start_http_server
from pydantic import SecretStr

from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import Keys
from skybuffer.observability.writer_stats import WriterStatsCollector, record_run
from skybuffer.settings import Settings, StackSettings

from .harness import (
    FakeSlack,
    fast_config,
    firing,
    free_port,
    get_json,
    post_json,
    query,
    stack_settings,
    wait_for,
)

pytestmark = pytest.mark.slow


@dataclass
class Pipeline:
    settings: Settings
    redis: ManagedRedis
    stack: StackSettings
    urls: dict[str, str]
    slack: FakeSlack

    @property
    def prometheus(self) -> str:
        return self.urls["prometheus"]

    @property
    def alertmanager(self) -> str:
        return self.urls["alertmanager"]


@pytest.fixture
def started(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    managed_redis: Callable[[Settings], ManagedRedis],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
    fake_slack: FakeSlack,
) -> Pipeline:
    """Redis (4 MB maxmemory) and the stack, on the fast copy of the committed config."""
    config = fast_config(tmp_path / "config", short_for=True)
    settings = make_settings(redis={"maxmemory": "4mb"})
    server = managed_redis(settings)
    stack = stack_settings(config, slack_webhook_url=SecretStr(fake_slack.url))
    urls = run_stack(settings, stack)
    return Pipeline(settings, server, stack, urls, fake_slack)


@pytest.fixture
def pipeline(started: Pipeline) -> Pipeline:
    """The same, once Prometheus has scraped Redis through the exporter."""
    wait_for(
        "Prometheus to scrape redis_up 1 through the exporter",
        lambda: query(started.prometheus, "redis_up == 1")["data"]["result"],
    )
    return started


def test_stopping_redis_posts_redis_down_to_slack_and_restarting_it_posts_resolved(
    pipeline: Pipeline,
) -> None:
    pipeline.redis.stop(timeout=10)
    down = pipeline.slack.wait_for_title("[FIRING:1] RedisDown (critical)")
    assert "Redis is down" in down["text"]
    assert "docs/RUNBOOK.md#redisdown" in down["text"]
    assert down["color"] == "danger"

    pipeline.redis.start()
    resolved = pipeline.slack.wait_for_title("[RESOLVED] RedisDown (critical)")
    assert resolved["color"] == "good"
    assert "resolved" in resolved["text"]
    _assert_webhook_read_from_secret_file_and_never_logged(pipeline)


def _assert_webhook_read_from_secret_file_and_never_logged(pipeline: Pipeline) -> None:
    secret_path = "/" + pipeline.slack.url.split("/", 3)[3]
    assert pipeline.slack.paths and set(pipeline.slack.paths) == {secret_path}
    stack_dir = pipeline.settings.data_dir / "stack"
    for text_file in [*stack_dir.glob("*.log"), *stack_dir.glob("*/*.yml")]:
        assert secret_path not in text_file.read_text(), f"webhook URL leaked into {text_file}"


def test_filling_redis_to_maxmemory_fires_redis_writes_rejected(pipeline: Pipeline) -> None:
    client = pipeline.redis.client()
    payload = b"x" * 16384
    rejected: list[str] = []

    def write_until_refused() -> list[dict[str, Any]]:
        for _ in range(64):
            try:
                client.xadd("skybuffer:stream:posts", {"v": "1", "n": "1", "d": payload})
            except redis.exceptions.OutOfMemoryError as exc:  # noeviction at maxmemory
                rejected.append(str(exc))
                break
        return firing(pipeline.prometheus, "RedisWritesRejected")

    alerts = wait_for("RedisWritesRejected to fire while XADD is refused", write_until_refused)
    assert rejected, "Redis never refused a write"
    assert alerts[0]["labels"]["severity"] == "critical"
    pipeline.slack.wait_for_title("[FIRING:1] RedisWritesRejected (critical)")
    assert firing(pipeline.prometheus, "RedisEvictions") == []


def _alert(name: str, **labels: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "labels": {"alertname": name, "instance": "redis:9121", **labels},
        "annotations": {"summary": name},
        "startsAt": now.isoformat(),
        "endsAt": (now + dt.timedelta(minutes=5)).isoformat(),
    }


def test_redis_down_silences_the_alerts_it_causes(started: Pipeline) -> None:
    alerts = [
        _alert("RedisDown", severity="critical"),
        _alert("IngestStalled", severity="critical", instance="ingester:8001"),
        _alert("DataWriterFailing", severity="critical", instance="datawriter:8002"),
        _alert("RedisMemoryCritical", severity="critical", instance="a:9121"),
        _alert("RedisMemoryHigh", severity="warning", instance="a:9121"),
        _alert("RedisMemoryHigh", severity="warning", instance="b:9121"),
    ]
    assert post_json(f"{started.alertmanager}/api/v2/alerts", alerts) == 200

    def states() -> dict[tuple[str, str], str] | None:
        got = get_json(f"{started.alertmanager}/api/v2/alerts")
        found = {(a["labels"]["alertname"], a["labels"]["instance"]): a for a in got}
        if len(found) < len(alerts):
            return None
        return {key: a["status"]["state"] for key, a in found.items()}

    expected = {
        ("RedisDown", "redis:9121"): "active",
        ("IngestStalled", "ingester:8001"): "suppressed",
        ("DataWriterFailing", "datawriter:8002"): "suppressed",
        ("RedisMemoryCritical", "a:9121"): "active",
        ("RedisMemoryHigh", "a:9121"): "suppressed",
        ("RedisMemoryHigh", "b:9121"): "active",
    }
    wait_for(f"inhibition {expected}", lambda: states() == expected)


def test_a_failed_datawriter_run_reaches_slack(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    managed_redis: Callable[[Settings], ManagedRedis],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
    fake_slack: FakeSlack,
) -> None:
    """The DataWriter's one notification path: its run outcome, kept in Redis, exported
    by the serving process, alerted on by Prometheus, routed to Slack by Alertmanager."""
    config = fast_config(tmp_path / "config", short_for=True)
    port = free_port()
    settings = make_settings(metrics={"ingest_port": 0, "writer_port": port})
    client = managed_redis(settings).client()
    registry = CollectorRegistry()
    registry.register(WriterStatsCollector(client, Keys()))
    httpd, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        stack = stack_settings(config, slack_webhook_url=SecretStr(fake_slack.url))
        prometheus = run_stack(settings, stack)["prometheus"]
        wait_for(
            "Prometheus to scrape the DataWriter's run counters",
            lambda: query(prometheus, 'skybuffer_writer_runs_total{outcome="failure"} == 0')[
                "data"
            ]["result"],
        )
        record_run(client, Keys(), "failure", 3.0)
        message = fake_slack.wait_for_title("[FIRING:1] DataWriterRunFailed (critical)")
        assert "docs/RUNBOOK.md#datawriterrunfailed" in message["text"]
    finally:
        httpd.shutdown()
