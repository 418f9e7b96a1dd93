"""The committed Prometheus config and alert rules: promtool accepts them, promtool's unit
tests pass, and every alert is documented, declared on real metrics and unit-tested both
firing and staying silent.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from .harness import CONFIG, PROMETHEUS, REPO, alert_rules, declared_families, require

RUNBOOK = REPO / "docs" / "RUNBOOK.md"
ISSUE_ALERTS = {
    "RedisDown", "RedisMemoryHigh", "RedisMemoryCritical", "RedisMemoryFullSoon",
    "RedisEvictions", "RedisWritesRejected", "RedisAOFFailing", "RedisRejectedConnections",
    "BufferBacklogOld", "IngestStalled", "DeadLettersRising", "DataWriterFailing",
    "DataWriterSlow", "LakeDiskLow",
}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    require("promtool")
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def unit_tests() -> list[dict[str, Any]]:
    cases = []
    for path in sorted((PROMETHEUS / "tests").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["tests"]:
            cases += group.get("alert_rule_test", [])
    return cases


def test_promtool_accepts_the_config_with_its_rules_and_compose_targets() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    files = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "rules").glob("*.yml"))
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    files = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "tests").glob("*.yml"))
    result = promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_the_issue_asks_for_exists_once() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert ISSUE_ALERTS <= set(names), ISSUE_ALERTS - set(names)


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    headings = {
        re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower().replace(" ", "-"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in alert_rules():
        name, annotations = rule["alert"], rule["annotations"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/RUNBOOK.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/RUNBOOK.md has no '## {name}' section"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    fires = {case["alertname"] for case in unit_tests() if case.get("exp_alerts")}
    silent = {case["alertname"] for case in unit_tests() if not case.get("exp_alerts")}
    for rule in alert_rules():
        assert rule["alert"] in fires, f"no promtool case where {rule['alert']} fires"
        assert rule["alert"] in silent, f"no promtool case where {rule['alert']} must not fire"


def declared_series() -> set[str]:
    """Every series name skybuffer's REGISTRY can expose (with the type's suffixes)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = set()
    for family in declared_families():
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


@pytest.mark.parametrize(
    "path",
    [*sorted((PROMETHEUS / "rules").glob("*.yml")), *sorted(CONFIG.glob("grafana/dashboards/*"))],
    ids=lambda p: p.name,
)
def test_rules_and_dashboards_use_only_declared_skybuffer_metrics(path: Any) -> None:
    used = set(re.findall(r"\bskybuffer_[a-z_]+\b(?!\.)", path.read_text()))  # not file names
    assert used <= declared_series(), used - declared_series()


RATE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|deriv|predict_linear|min_over_time)\(")


def has_missing_samples(values: str) -> bool:
    """`_` (or `_xN`) in promtool's expanding notation: no sample at that step."""
    return any(word == "_" or word.startswith("_x") for word in values.split())


def silent_cases_with_gaps() -> set[str]:
    """Alerts with a must-not-fire case whose input has missing samples: a scrape gap, a
    restart or a series that appears late."""
    names = set()
    for path in sorted((PROMETHEUS / "tests").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["tests"]:
            if any(has_missing_samples(str(s["values"])) for s in group["input_series"]):
                cases = group["alert_rule_test"]
                names |= {case["alertname"] for case in cases if not case["exp_alerts"]}
    return names


def test_every_rate_or_projection_alert_is_tested_silent_across_gaps_and_restarts() -> None:
    """The false positives of a rate or a projection come from where samples are missing:
    a fresh start, a restart, a scrape gap. Every such rule has a promtool case of them."""
    covered = silent_cases_with_gaps()
    for rule in alert_rules():
        if RATE_FUNCTIONS.search(rule["expr"]):
            assert rule["alert"] in covered, f"no silent case with gaps for {rule['alert']}"
