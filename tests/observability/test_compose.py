"""docker-compose.yml, checked without a Docker engine: it parses, every file it mounts
exists, every service it names is defined, images are pinned and secrets come from the
environment. The compose targets of Prometheus and Grafana's datasource name services too.
The profiles sentinel and cluster add their Redis processes on the committed config, and
each mode's Prometheus targets name exactly the Redis processes that mode runs.

Also covers: skybuffer.buffer.deployment (the files the profiles' nodes start with).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .harness import CONFIG, REPO

COMPOSE = REPO / "docker-compose.yml"
MODES = ("standalone", "sentinel", "cluster")
PROFILED = {
    "sentinel": {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"},
    "cluster": {*(f"redis-cluster-{n}" for n in range(1, 7)), "redis-cluster-create"},
}


def with_mode(text: str, mode: str) -> str:
    """``text`` as compose interpolates ${SKYBUFFER_REDIS_MODE:-standalone} for ``mode``."""
    return text.replace("${SKYBUFFER_REDIS_MODE:-standalone}", mode)


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
            for mode in MODES:
                source = with_mode(volume, mode).split(":", 1)[0]
                if source.startswith((".", "/")):
                    assert "${" not in source, f"{name}: {source}"
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


# --- the sentinel and cluster profiles -------------------------------------------------------
def test_the_profiles_add_the_redis_processes_of_their_topology(services: dict[str, Any]) -> None:
    for profile, names in PROFILED.items():
        assert {n for n, s in services.items() if profile in s.get("profiles", [])} == names
    unprofiled = {n for n, s in services.items() if not s.get("profiles")}
    assert {"redis", "redis-acl", "redis-exporter", "ingester", "datawriter"} <= unprofiled


def test_every_redis_process_runs_the_committed_config_and_the_rendered_acl(
    services: dict[str, Any],
) -> None:
    """The same redis.conf (read-only) and the users.acl that redis-acl renders from the
    committed templates; one image for all; passwords only in files."""
    nodes = ["redis", "redis-replica", *(f"redis-cluster-{n}" for n in range(1, 7))]
    for name in nodes:
        service = services[name]
        assert service["image"] == services["redis"]["image"], name
        assert "./config/redis:/etc/skybuffer/redis:ro" in service["volumes"], name
        command = service["command"]
        assert command[:2] == ["redis-server", "/etc/skybuffer/redis/redis.conf"], name
        assert command[command.index("--aclfile") + 1] == "/var/lib/skybuffer/redis/users.acl"
        assert "/var/lib/skybuffer/redis/replication.conf" in command, name
        assert not any("pass" in str(arg).lower() for arg in command), name
    for number in (1, 2, 3):
        command = services[f"sentinel-{number}"]["command"]
        assert command == [
            "redis-server",
            f"/var/lib/skybuffer/redis/sentinel-{number}/sentinel.conf",
            "--sentinel",
        ]
    assert "/etc/skybuffer/redis/cluster.conf" in services["redis-cluster-1"]["command"]
    assert (CONFIG / "redis" / "cluster.conf").is_file()


def test_the_node_directories_are_those_redis_acl_renders(
    services: dict[str, Any], tmp_path: Path
) -> None:
    from skybuffer.buffer.deployment import render
    from skybuffer.settings import RedisSettings

    for mode in ("sentinel", "cluster"):
        settings = RedisSettings(mode=mode, sentinel_password="s", conf=CONFIG / "redis/redis.conf")
        root = tmp_path / mode
        render(settings, root)
        for name in PROFILED[mode] - {"redis-cluster-create"}:
            command = services[name]["command"]
            path = command[command.index("--dir") + 1] if "--dir" in command else command[1]
            relative = Path(path).relative_to("/var/lib/skybuffer/redis")
            assert (root / relative).exists(), (mode, name, relative)


def _redis_targets(mode: str) -> list[dict[str, Any]]:
    path = CONFIG / "prometheus" / "targets" / f"redis-{mode}.yml"
    return list(yaml.safe_load(path.read_text()))


def test_each_modes_prometheus_targets_name_exactly_its_redis_processes(
    services: dict[str, Any],
) -> None:
    prometheus = services["prometheus"]
    mounts = [with_mode(v, "sentinel") for v in prometheus["volumes"]]
    assert (
        "./config/prometheus/targets/redis-sentinel.yml:/etc/prometheus/targets/redis.yml:ro"
        in mounts
    )
    standalone = CONFIG / "prometheus" / "targets" / "redis-standalone.yml"
    assert standalone.resolve() == (CONFIG / "prometheus" / "targets" / "redis.yml").resolve()
    expected = {"sentinel": {"redis", *PROFILED["sentinel"]}, "cluster": PROFILED["cluster"]}
    for mode, names in expected.items():
        scraped = set()
        for group in _redis_targets(mode):
            labels = group["labels"]
            assert group["targets"] == ["redis-exporter:9121"]
            assert labels["__metrics_path__"] == "/scrape"
            assert labels["__param_target"] == f"redis://{labels['instance']}"
            host = labels["instance"].split(":")[0]
            assert labels["node"] == host and host in services
            scraped.add(host)
        assert scraped == names - {"redis-cluster-create"}, mode


def test_the_pipeline_follows_the_mode_and_names_the_profiles_services(
    services: dict[str, Any],
) -> None:
    import json

    environment = services["ingester"]["environment"]
    assert environment["SKYBUFFER_REDIS__MODE"] == "${SKYBUFFER_REDIS_MODE:-standalone}"
    assert environment["SKYBUFFER_REDIS__URL"].startswith("${SKYBUFFER_REDIS_URL-")
    sentinels = json.loads(environment["SKYBUFFER_REDIS__SENTINELS"])
    assert {s.split(":")[0] for s in sentinels} == {f"sentinel-{n}" for n in (1, 2, 3)}
    nodes = json.loads(environment["SKYBUFFER_REDIS__CLUSTER_NODES"])
    assert {n.split(":")[0] for n in nodes} <= PROFILED["cluster"]
    acl = services["redis-acl"]["environment"]
    assert acl["SKYBUFFER_REDIS__MODE"] == environment["SKYBUFFER_REDIS__MODE"]
