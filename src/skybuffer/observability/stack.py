"""The local monitoring stack: redis_exporter, Prometheus and Alertmanager as child processes.

Why it exists: a laptop gets the alerts, rules and routes of production without Docker.
The Debian binaries run on the committed files under ``config/`` -- symlinked into
``{data_dir}/stack``, never copied or templated -- beside the few things that differ
per machine, which ``stack up`` writes: Prometheus' file_sd targets (loopback ports) and
the secrets (the Slack webhook for Alertmanager's ``api_url_file``, the exporter's
Redis password). Everything listens on loopback; data lives under the data dir.

Each process outlives the command that started it and is found again by its pid file;
it is stopped by that pid only (SIGTERM, then SIGKILL after a timeout), never by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from skybuffer.datadir import ensure_free, port_of
from skybuffer.errors import ConfigError, MissingBinaryError
from skybuffer.observability.programs import (
    ALERTMANAGER,
    COMPONENTS,
    EXPORTER,
    PROMETHEUS,
    ChildProcess,
    Component,
    ready,
)
from skybuffer.observability.stack_secrets import StackSecrets
from skybuffer.privilege import private_dir
from skybuffer.processes import atomic_write
from skybuffer.settings import Settings, StackSettings


def missing_binaries() -> dict[str, str]:
    """Binary -> Debian package of each program of the stack that is not installed."""
    return {c.binaries[0]: c.package for c in COMPONENTS if c.which() is None}


def stack_available() -> bool:
    """True when all three programs are installed (`skybuffer run` then starts the stack)."""
    return not missing_binaries()


def stack_up(settings: Settings, stack: StackSettings | None = None) -> dict[str, str]:
    """Start whatever part of the stack is not running; return the URLs to open."""
    return Stack(settings, stack).up()


def stack_down(settings: Settings, stack: StackSettings | None = None) -> dict[str, str]:
    """Stop the stack's processes of this data dir; return what happened to each."""
    return Stack(settings, stack).down()


def stack_status(settings: Settings, stack: StackSettings | None = None) -> dict[str, Any]:
    """Pids, URLs, readiness and the Slack configuration (never the URL itself)."""
    return Stack(settings, stack).status()


class Stack:
    """The three processes of one data dir."""

    def __init__(self, settings: Settings, stack: StackSettings | None = None) -> None:
        self.settings = settings
        self.conf = stack or settings.stack
        self.dir = settings.data_dir / "stack"
        self.secrets = self.dir / "secrets"
        self.keys = StackSecrets(settings, self.conf, self.secrets)

    # --- public ------------------------------------------------------------------------
    def urls(self) -> dict[str, str]:
        return {c.name: self._url(c) for c in COMPONENTS}

    def up(self) -> dict[str, str]:
        self._check_binaries()
        self.settings.claim_ports()
        self.lay_out()
        started: list[Component] = []
        try:
            for component in COMPONENTS:
                if self._process(component).pid() is None:
                    self._start(component)
                    started.append(component)
                else:
                    self._process(component).reload()
        except Exception:
            for component in reversed(started):
                self._process(component).stop(self.conf.stop_timeout_seconds)
            raise
        return {**self.urls(), "redis_exporter": self._url(EXPORTER) + "/metrics"}

    def down(self) -> dict[str, str]:
        result = {}
        for component in reversed(COMPONENTS):
            stopped = self._process(component).stop(self.conf.stop_timeout_seconds)
            result[component.name] = "stopped" if stopped else "not running"
        return result

    def status(self) -> dict[str, Any]:
        components = {}
        for component in COMPONENTS:
            process = self._process(component)
            pid = process.pid()
            components[component.name] = {
                "running": pid is not None,
                "pid": pid,
                "url": self._url(component),
                "ready": pid is not None and ready(self._url(component) + component.ready_path),
                "log": str(process.logfile),
                "binary": component.which(),
            }
        return {
            "stack_dir": str(self.dir),
            "components": components,
            "slack": self.keys.slack_state(),
        }

    # --- layout ------------------------------------------------------------------------
    def _check_binaries(self) -> None:
        for component in COMPONENTS:
            if component.which() is None:
                raise MissingBinaryError(component.binaries[0], component.package)

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
        targets = {
            "redis": self._address(self.conf.exporter_port),
            "skybuffer_ingest": metrics.ingest_port and f"{host}:{metrics.ingest_port}",
            "skybuffer_writer": metrics.writer_port and f"{host}:{metrics.writer_port}",
            "alertmanager": self._address(self.conf.alertmanager_port),
            "prometheus": self._address(self.conf.prometheus_port),
        }
        for job, target in targets.items():
            groups = [{"targets": [target]}] if target else []
            atomic_write(directory / f"{job}.yml", json.dumps(groups) + "\n")

    # --- processes ---------------------------------------------------------------------
    def _process(self, component: Component) -> ChildProcess:
        return ChildProcess(component, self.dir)

    def _start(self, component: Component) -> None:
        ensure_free(self.conf.host, self._port(component), component.name, self.settings.data_dir)
        binary = component.which()
        assert binary is not None  # _check_binaries ran
        args, cwd = self._command(component, binary)
        process = self._process(component)
        pid = process.spawn(args, cwd)
        ready_url = self._url(component) + component.ready_path
        process.waitready(pid, ready_url, self.conf.start_timeout_seconds)

    def _command(self, component: Component, binary: str) -> tuple[list[str], Path]:
        web = [
            f"--web.listen-address={self._address(self._port(component))}",
            f"--web.external-url={self._url(component)}/",
        ]
        if component is EXPORTER:
            return self._exporter_command(binary), self.dir
        if component is ALERTMANAGER:
            return [binary, *self._alertmanager_options(), *web], self.dir / "alertmanager"
        return [binary, *self._prometheus_options(), *web], self.dir / "prometheus"

    def _alertmanager_options(self) -> list[str]:
        storage = self.settings.data_dir / "alertmanager"
        storage.mkdir(parents=True, exist_ok=True)
        return [
            "--config.file=alertmanager.yml",
            f"--storage.path={storage}",
            "--cluster.listen-address=",
        ]

    def _prometheus_options(self) -> list[str]:
        tsdb = self.settings.data_dir / "prometheus"
        tsdb.mkdir(parents=True, exist_ok=True)
        return [
            f"--config.file={self.dir / 'prometheus' / 'prometheus.yml'}",
            f"--storage.tsdb.path={tsdb}",
            f"--storage.tsdb.retention.time={self.conf.retention}",
        ]

    def _exporter_command(self, binary: str) -> list[str]:
        redis_addr = self._redis_addr()
        prefix = self.settings.redis.prefix
        streams = f"-check-streams={prefix}stream:*,{prefix}deadletter"
        listen = f"-web.listen-address={self._address(self.conf.exporter_port)}"
        return [
            binary,
            f"-redis.addr={redis_addr}",
            *self.keys.exporter_auth(redis_addr),
            streams,
            listen,
        ]

    def _redis_addr(self) -> str:
        redis_settings = self.settings.redis
        if redis_settings.url:
            parts = urlsplit(redis_settings.url)
            return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"
        return f"redis://{redis_settings.host}:{redis_settings.port}"

    def _port(self, component: Component) -> int:
        port = {
            EXPORTER.name: self.conf.exporter_port,
            ALERTMANAGER.name: self.conf.alertmanager_port,
            PROMETHEUS.name: self.conf.prometheus_port,
        }[component.name]
        return port_of(port, component.name)

    def _address(self, port: int | None) -> str:
        port = port_of(port, "the monitoring stack")
        host = f"[{self.conf.host}]" if ":" in self.conf.host else self.conf.host
        return f"{host}:{port}"

    def _url(self, component: Component) -> str:
        return f"http://{self._address(self._port(component))}"


# --- helpers ------------------------------------------------------------------------------
def _symlink(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise ConfigError(f"{link} exists and is not a symlink: remove it (stack files)")
    link.symlink_to(target)
