"""The exporter's ACL user allows exactly what redis_exporter 1.45 (Debian bookworm) sends
with skybuffer's flags, and the metrics the rules and dashboards use are all still there.

What redis_exporter v1.45.0 sends (exporter/*.go at that tag) with `-check-streams` and
its defaults: AUTH, CLIENT SETNAME, CONFIG GET *, INFO ALL, LATENCY LATEST, SLOWLOG LEN,
SLOWLOG GET 1, SELECT 0, SCAN ... MATCH skybuffer:stream:*, and per stream XINFO STREAM,
XINFO GROUPS, XINFO CONSUMERS. It never reads entries with XRANGE.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable

import pytest
import redis

from skybuffer.buffer.server import ManagedRedis
from skybuffer.settings import Settings, StackSettings

from .harness import CONFIG, TOPOLOGY_ONLY, alert_rules, stack_settings, wait_for

pytestmark = pytest.mark.slow

STREAMS = ("skybuffer:stream:likes", "skybuffer:stream:posts", "skybuffer:deadletter")
# Families that exist only once what they count has happened (an error reply, a rejected
# connection, a slow command): a fresh Redis has none, whatever the ACL.
ONLY_AFTER_AN_EVENT = {"redis_errors_total"}


def _used_redis_metrics() -> set[str]:
    """Every redis_* family in an expression of the alert rules or the Grafana dashboards."""
    exprs = [str(rule["expr"]) for rule in alert_rules()]
    for path in (CONFIG / "grafana" / "dashboards").glob("*.json"):
        exprs += re.findall(r'"expr":\s*"((?:[^"\\]|\\.)*)"', path.read_text())
    return {name for expr in exprs for name in re.findall(r"\bredis_[a-z_]+\b", expr)}


def _scrape(url: str) -> dict[str, list[str]]:
    """Family name -> its sample lines, from one /metrics scrape."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    families: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            families.setdefault(re.split(r"[{ ]", line, maxsplit=1)[0], []).append(line)
    return families


def _fill(server: ManagedRedis) -> None:
    """Streams with a consumer group, a consumer and pending entries, like a running pipeline."""
    client = server.client()
    for stream in STREAMS:
        client.xadd(stream, {"batch": b"compressed events"})
        client.xgroup_create(stream, "datawriter", id="0")
        client.xreadgroup("datawriter", "writer-1", {stream: ">"}, count=1)


def test_the_exporter_gets_every_metric_it_needs_and_no_command_is_denied(
    make_settings: Callable[..., Settings],
    managed_redis: Callable[[Settings], ManagedRedis],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
) -> None:
    settings = make_settings()
    server = managed_redis(settings)
    _fill(server)
    admin = server.client("admin")
    admin.acl_log_reset()

    urls = run_stack(settings, stack_settings(CONFIG))
    families = wait_for(
        "the exporter's stream metrics",
        lambda: (f := _scrape(urls["redis_exporter"])).get("redis_stream_length") and f,
    )
    families = _scrape(urls["redis_exporter"])  # a second scrape: the steady state

    assert families["redis_up"] == ["redis_up 1"]
    assert families["redis_exporter_last_scrape_error"][0].endswith(" 0")
    for family in (
        "redis_stream_length",
        "redis_stream_group_messages_pending",
        "redis_stream_group_last_delivered_id",
        "redis_stream_last_generated_id",
    ):
        for stream in STREAMS:
            assert any(f'stream="{stream}"' in s for s in families[family]), (family, stream)
    standalone = {name for name in _used_redis_metrics() if not TOPOLOGY_ONLY.search(name)}
    missing = standalone - set(families) - ONLY_AFTER_AN_EVENT
    assert missing == set(), f"used by rules/dashboards, not exported: {sorted(missing)}"

    denied = [(e["username"], e["reason"], e["object"]) for e in admin.acl_log()]
    assert denied == [], "ACL LOG after a scrape (user, reason, command or key)"


def test_the_exporter_user_cannot_read_entries_or_write(
    make_settings: Callable[..., Settings], managed_redis: Callable[[Settings], ManagedRedis]
) -> None:
    server = managed_redis(make_settings())
    _fill(server)
    exporter = server.client("exporter")
    assert exporter.xinfo_stream("skybuffer:stream:likes")["length"] == 1
    for denied in (
        lambda: exporter.xrange("skybuffer:stream:likes"),
        lambda: exporter.xrevrange("skybuffer:stream:likes"),
        lambda: exporter.xreadgroup("datawriter", "spy", {"skybuffer:stream:likes": "0"}),
        lambda: exporter.get("skybuffer:cursor:jetstream"),
        lambda: exporter.hgetall("skybuffer:events"),
        lambda: exporter.xadd("skybuffer:stream:likes", {"v": "1"}),
        lambda: exporter.config_set("maxmemory", "1"),
        lambda: exporter.xinfo_stream("elsewhere"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
