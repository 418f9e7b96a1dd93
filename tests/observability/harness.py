"""The harness of the monitoring tests: config copies, a Slack stand-in, API helpers.

The committed config files are what is tested. A test copy changes only intervals
(scrape and evaluation every second, Alertmanager's group waits of a second) and, for
the end-to-end tests, the ``for:`` durations, so that an alert reaches the stand-in for
Slack in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from skybuffer.buffer.server import ManagedRedis
from skybuffer.datadir import free_port
from skybuffer.settings import StackSettings

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
PROMETHEUS = CONFIG / "prometheus"
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
    "redis-server": "redis-server",
}


def require(*binaries: str) -> None:
    """Skip, naming the Debian package, when a binary is truly missing (`make test`
    installs them all, so CI never skips)."""
    for binary in binaries:
        if shutil.which(binary) is None:
            package = PACKAGES.get(binary, binary)
            pytest.skip(f"{binary} is not installed: apt-get install {package} (make test does)")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


# --- config copies ------------------------------------------------------------------------
def _substitute(text: str, pattern: str, repl: str, name: str) -> str:
    new, count = re.subn(pattern, repl, text)
    assert count >= 1, f"{name}: {pattern!r} not found; update the test copy"
    return new


def fast_config(dest: Path, *, short_for: bool = False) -> Path:
    """A copy of config/ with second-long intervals (and ``for:`` when asked)."""
    shutil.copytree(CONFIG / "prometheus", dest / "prometheus")
    shutil.copytree(CONFIG / "alertmanager", dest / "alertmanager")
    prom = dest / "prometheus" / "prometheus.yml"
    text = prom.read_text()
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        text = _substitute(text, rf"(?m)^(\s+{key}:) \S+", r"\1 1s", "prometheus.yml")
    prom.write_text(text)
    if short_for:
        for rules in (dest / "prometheus" / "rules").glob("*.yml"):
            text = _substitute(rules.read_text(), r"(?m)^(\s+for:) \S+", r"\1 1s", rules.name)
            rules.write_text(text)
    am = dest / "alertmanager" / "alertmanager.yml"
    text = am.read_text()
    for key in ("group_wait", "group_interval"):
        text = _substitute(text, rf"(?m)^(\s+{key}:) \S+", r"\1 1s", "alertmanager.yml")
    am.write_text(text)
    return dest


# --- a stand-in for Slack's incoming webhook ----------------------------------------------
@dataclass
class FakeSlack:
    """Records what Alertmanager posts; answers 200 "ok" like Slack does."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def titles(self) -> list[str]:
        return [a.get("title", "") for post in self.posts for a in post.get("attachments", [])]

    def wait_for_title(self, title: str, timeout: float = 60.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for post in list(self.posts):
                for attachment in post.get("attachments", []):
                    if attachment.get("title") == title:
                        return dict(attachment)
            return None

        try:
            return dict(wait_for(f"Slack message {title!r}", find, timeout))
        except pytest.fail.Exception:
            pytest.fail(f"no Slack message {title!r} within {timeout:.0f}s; got {self.titles()}")


# --- redis and the stack ------------------------------------------------------------------
def stack_settings(config_dir: Path, **overrides: Any) -> StackSettings:
    ports = {
        "prometheus_port": free_port(),
        "alertmanager_port": free_port(),
        "exporter_port": free_port(),
        "slack_webhook_url": None,  # never the developer's real webhook from the env
    }
    return StackSettings(config_dir=config_dir, **{**ports, **overrides})


# --- the committed dashboards ----------------------------------------------------------
DASHBOARDS = CONFIG / "grafana" / "dashboards"
TOPOLOGY_ONLY = re.compile(
    r"redis_master_link_up|redis_connected_slave_|redis_cluster_|redis_sentinel_|"
    r"skybuffer_partition_"
)
"""Series only a sentinel or cluster topology (or a partitioned buffer) has."""
# Grafana's variables, as a user would see them on a one-Redis deployment.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$instance": ".*"}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr with Grafana's variables filled in) of every panel target."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((board["title"], panel["title"], expr))
    return found


# --- Prometheus and Alertmanager HTTP APIs ------------------------------------------------
def get_json(url: str, **params: str) -> Any:
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:  # Prometheus answers 400 with a JSON error
        return json.load(exc)


def post_json(url: str, payload: Any) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def query(prometheus: str, expr: str) -> dict[str, Any]:
    """/api/v1/query: {'status': 'success', 'data': {'result': [...]}} or an error."""
    return dict(get_json(f"{prometheus}/api/v1/query", query=expr))


def firing(prometheus: str, alertname: str) -> list[dict[str, Any]]:
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


# --- processes ----------------------------------------------------------------------------
def stop_redis(server: ManagedRedis) -> None:
    """SHUTDOWN, then SIGKILL by the pid it was started with if it is still there."""
    pid = server.pid()
    try:
        server.stop(timeout=10)
    except Exception:  # noqa: BLE001 - teardown must reach the kill below
        pass
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the committed rules -------------------------------------------------------------------
def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule for rule in group["rules"] if "alert" in rule]
    return rules


def declared_families() -> list[Any]:
    """Every metric family skybuffer exposes: the in-process REGISTRY, and the families
    the DataWriter-serving process computes at scrape time (PipelineCollector)."""
    from skybuffer import metrics
    from skybuffer.constants import Keys
    from skybuffer.observability.exporter import PipelineCollector

    scrape_time = PipelineCollector(None, Keys(), None).describe()  # type: ignore[arg-type]
    return [*metrics.REGISTRY.collect(), *scrape_time]
