"""Where the local stack's things are: its files under ``{data_dir}/stack`` and the
loopback address each program listens on.

The committed files under ``config/`` are symlinked into the stack dir, never copied or
templated; beside them ``lay_out`` writes only what differs per machine: Prometheus'
file_sd targets (loopback ports; a group per node in sentinel and cluster modes) and the
secrets (stack_secrets.py). Starting and stopping the programs is stack.py's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from skybuffer.datadir import port_of
from skybuffer.errors import ConfigError
from skybuffer.observability.programs import ALERTMANAGER, EXPORTER, PROMETHEUS, Component
from skybuffer.observability.redis_targets import redis_targets
from skybuffer.observability.stack_secrets import StackSecrets
from skybuffer.privilege import private_dir
from skybuffer.processes import atomic_write
from skybuffer.settings import Settings, StackSettings


class Endpoints:
    """The address of each program of the stack: ``stack.host`` and its claimed port."""

    def __init__(self, conf: StackSettings) -> None:
        self.conf = conf

    def port(self, component: Component) -> int:
        port = {
            EXPORTER.name: self.conf.exporter_port,
            ALERTMANAGER.name: self.conf.alertmanager_port,
            PROMETHEUS.name: self.conf.prometheus_port,
        }[component.name]
        return port_of(port, component.name)

    def address(self, port: int | None) -> str:
        port = port_of(port, "the monitoring stack")
        host = f"[{self.conf.host}]" if ":" in self.conf.host else self.conf.host
        return f"{host}:{port}"

    def url(self, component: Component) -> str:
        return f"http://{self.address(self.port(component))}"


class StackLayout:
    """The stack dir of one data dir, laid out for the programs to run in."""

    def __init__(self, settings: Settings, conf: StackSettings, keys: StackSecrets) -> None:
        self.settings = settings
        self.conf = conf
        self.dir = settings.data_dir / "stack"
        self.secrets = self.dir / "secrets"
        self.keys = keys
        self.endpoints = Endpoints(conf)

    def lay_out(self) -> None:
        """Symlink the committed config, write targets and secrets (see module docstring);
        starts nothing."""
        prom, am = self._config_source("prometheus"), self._config_source("alertmanager")
        private_dir(self.secrets)
        _symlink(self.dir / "prometheus" / "prometheus.yml", prom / "prometheus.yml")
        _symlink(self.dir / "prometheus" / "rules", prom / "rules")
        _symlink(self.dir / "alertmanager" / "alertmanager.yml", am / "alertmanager.yml")
        _symlink(self.dir / "alertmanager" / "templates", am / "templates")
        _symlink(self.dir / "alertmanager" / "secrets", Path("..") / "secrets")
        self._write_targets(self.dir / "prometheus" / "targets")
        self.keys.write_slack_url()

    def _config_source(self, name: str) -> Path:
        path = self.conf.config_dir.resolve() / name
        if not path.is_dir():
            raise ConfigError(f"{path} not found: set stack.config_dir to the repo's config/")
        return path

    def _write_targets(self, directory: Path) -> None:
        """file_sd files (JSON is valid YAML) for the jobs of config/prometheus.yml."""
        directory.mkdir(parents=True, exist_ok=True)
        metrics = self.settings.metrics
        host = "127.0.0.1" if metrics.host in ("", "0.0.0.0") else metrics.host
        address = self.endpoints.address
        targets = {
            "redis": address(self.conf.exporter_port),
            "skybuffer_ingest": metrics.ingest_port and f"{host}:{metrics.ingest_port}",
            "skybuffer_writer": metrics.writer_port and f"{host}:{metrics.writer_port}",
            "alertmanager": address(self.conf.alertmanager_port),
            "prometheus": address(self.conf.prometheus_port),
        }
        for job, target in targets.items():
            groups = [{"targets": [target]}] if target else []
            if job == "redis":
                groups = self._redis_groups(groups)
            atomic_write(directory / f"{job}.yml", json.dumps(groups) + "\n")

    def _redis_groups(self, standalone: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sentinel and cluster modes: one group per node and sentinel, each scraped
        through the exporter's /scrape (observability/redis_targets.py)."""
        exporter = self.endpoints.address(self.conf.exporter_port)
        return [t.group(exporter) for t in redis_targets(self.settings)] or standalone


def _symlink(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise ConfigError(f"{link} exists and is not a symlink: remove it (stack files)")
    link.symlink_to(target)
