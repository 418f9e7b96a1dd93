"""docker-compose.yml, checked without a Docker engine: it parses, every file it mounts
exists, every service it names is defined, images are pinned and secrets come from the
environment. The compose targets of Prometheus and Grafana's datasource name services too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .harness import CONFIG, REPO

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def test_the_production_services_are_all_defined(services: dict[str, Any]) -> None:
    wanted = {
        "redis", "redis-exporter", "prometheus", "alertmanager", "grafana", "prefect",
        "ingester", "datawriter",
    }  # fmt: skip
    assert wanted <= set(services)


def test_every_image_is_pinned_to_a_version(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+[\w.-]*", image), f"{name}: {image!r}"
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_every_mounted_file_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_every_referenced_service_volume_and_secret_is_defined(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], set(compose.get("volumes", {}))
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on undefined {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} uses undeclared volume {source}"
        for secret in service.get("secrets", []):
            assert secret["source"] in compose["secrets"], f"{name}: secret {secret}"


def test_urls_in_the_environment_name_defined_services(services: dict[str, Any]) -> None:
    hosts = set()
    for name, service in services.items():
        for value in (service.get("environment") or {}).values():
            for host in re.findall(r"://(?:[^/]*@)?([\w-]+):\d+", str(value)):
                assert host in services, f"{name} points at undefined service {host}"
                hosts.add(host)
    assert {"redis", "prefect"} <= hosts


def test_prometheus_targets_and_grafana_datasource_name_defined_services(
    services: dict[str, Any],
) -> None:
    hosts = {
        target.split(":")[0]
        for path in (CONFIG / "prometheus" / "targets").glob("*.yml")
        for group in yaml.safe_load(path.read_text())
        for target in group["targets"]
    }
    datasources = yaml.safe_load(
        (CONFIG / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    hosts |= {re.sub(r"^\w+://|:\d+.*$", "", d["url"]) for d in datasources["datasources"]}
    assert hosts - {"localhost"} <= set(services)


def test_secrets_come_from_the_environment_and_nothing_is_published_beyond_loopback(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    text = COMPOSE.read_text()
    assert "hooks.slack.com/services/T" not in text
    grafana = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", grafana), grafana
    assert compose["secrets"]["slack_webhook_url"] == {"environment": "SKYBUFFER_SLACK_WEBHOOK_URL"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_alertmanager_reads_the_webhook_where_its_config_says(services: dict[str, Any]) -> None:
    alertmanager = services["alertmanager"]
    config = yaml.safe_load((CONFIG / "alertmanager" / "alertmanager.yml").read_text())
    expected = Path(alertmanager["working_dir"]) / config["global"]["slack_api_url_file"]
    targets = [s["target"] for s in alertmanager["secrets"]]
    assert str(expected) in targets


def test_grafana_provisions_the_dashboards_from_the_mounted_directory(
    services: dict[str, Any],
) -> None:
    provider = yaml.safe_load(
        (CONFIG / "grafana" / "provisioning" / "dashboards" / "skybuffer.yml").read_text()
    )["providers"][0]
    mounts = dict(v.split(":")[:2][::-1] for v in services["grafana"]["volumes"])
    assert mounts[provider["options"]["path"]] == "./config/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./config/grafana/provisioning"
