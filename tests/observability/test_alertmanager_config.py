"""The committed Alertmanager config: amtool accepts it, each severity routes to its Slack
receiver, resolved messages are sent, and the webhook URL is never in the file.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from .harness import CONFIG, alert_rules, require

ALERTMANAGER = CONFIG / "alertmanager"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    require("amtool")
    return subprocess.run(
        ["amtool", *args], cwd=ALERTMANAGER, capture_output=True, text=True, timeout=60
    )


def config() -> dict[str, Any]:
    return dict(yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text()))


def test_amtool_accepts_the_config_and_its_templates() -> None:
    result = amtool("check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=RedisDown"], "slack-critical"),
        (["severity=warning", "alertname=RedisMemoryHigh"], "slack-warning"),
        (["severity=info", "alertname=Unknown"], "slack-warning"),
        (["alertname=NoSeverity"], "slack-warning"),
    ],
)
def test_each_severity_routes_to_its_slack_receiver(labels: list[str], receiver: str) -> None:
    result = amtool(
        "config", "routes", "test", "--config.file=alertmanager.yml",
        f"--verify.receivers={receiver}", *labels,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_every_severity_the_rules_use_has_its_own_route() -> None:
    routed = {
        matcher.split("=")[1].strip('"')
        for route in config()["route"]["routes"]
        for matcher in route["matchers"]
    }
    assert {rule["labels"]["severity"] for rule in alert_rules()} <= routed


def test_the_webhook_url_is_read_from_a_file_and_resolved_messages_are_sent() -> None:
    text = (ALERTMANAGER / "alertmanager.yml").read_text()
    assert not re.search(r"https?://", text.split("receivers:")[1])
    assert "slack_api_url:" not in text and "api_url:" not in text
    assert config()["global"]["slack_api_url_file"] == "secrets/slack_webhook_url"
    slack_configs = [s for r in config()["receivers"] for s in r.get("slack_configs", [])]
    assert slack_configs and all(s["send_resolved"] is True for s in slack_configs)


def test_inhibition_names_only_alerts_that_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    for rule in config()["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            value = re.sub(r'^alertname=~?"|"$', "", matcher)
            assert set(value.split("|")) <= names, matcher
