"""docs/METRICS.md documents every metric skybuffer declares; docs/RUNBOOK.md every alert
(checked in test_prometheus_rules.py).

Also covers: skybuffer.metrics (through the behaviour above).
"""

from __future__ import annotations

from .harness import REPO, declared_families


def test_metrics_doc_lists_every_declared_metric() -> None:
    doc = (REPO / "docs" / "METRICS.md").read_text()
    suffix = {"counter": "_total", "histogram": "", "gauge": ""}
    missing = [
        family.name + suffix[family.type]
        for family in declared_families()
        if not family.name.startswith("process_")  # prometheus_client's standard collector
        and f"`{family.name + suffix[family.type]}" not in doc
    ]
    assert not missing, f"docs/METRICS.md does not describe {missing}"
