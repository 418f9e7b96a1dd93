"""The local monitoring stack: redis_exporter, Prometheus and Alertmanager as child processes.

Why it exists: a laptop gets the alerts, rules and routes of production without Docker.
The Debian binaries run on the committed files under ``config/``, laid out in
``{data_dir}/stack`` with the few things that differ per machine (stack_layout.py: the
file_sd targets, the secrets). Everything listens on loopback; data lives under the data
dir.

Each process outlives the command that started it and is found again by its pid file;
it is stopped by that pid only (SIGTERM, then SIGKILL after a timeout), never by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from skybuffer.datadir import ensure_free
from skybuffer.errors import MissingBinaryError
from skybuffer.observability.programs import (
    ALERTMANAGER,
    COMPONENTS,
    EXPORTER,
    ChildProcess,
    Component,
    ready,
)
from skybuffer.observability.redis_targets import redis_targets
from skybuffer.observability.stack_layout import StackLayout
from skybuffer.observability.stack_secrets import StackSecrets
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
    """The three processes of one data dir: started in a laid-out stack dir
    (stack_layout.py) on their endpoints, found again and stopped by their pid files."""

    def __init__(self, settings: Settings, stack: StackSettings | None = None) -> None:
        self.settings = settings
        self.conf = stack or settings.stack
        self.dir = settings.data_dir / "stack"
        self.secrets = self.dir / "secrets"
        self.keys = StackSecrets(settings, self.conf, self.secrets)
        self.layout = StackLayout(settings, self.conf, self.keys)
        self.endpoints = self.layout.endpoints

    def urls(self) -> dict[str, str]:
        return {c.name: self.endpoints.url(c) for c in COMPONENTS}

    def up(self) -> dict[str, str]:
        self._check_binaries()
        self.settings.claim_ports()
        self.layout.lay_out()
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
        return {**self.urls(), "redis_exporter": self.endpoints.url(EXPORTER) + "/metrics"}

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
            url = self.endpoints.url(component)
            components[component.name] = {
                "running": pid is not None,
                "pid": pid,
                "url": url,
                "ready": pid is not None and ready(url + component.ready_path),
                "log": str(process.logfile),
                "binary": component.which(),
            }
        return {
            "stack_dir": str(self.dir),
            "components": components,
            "slack": self.keys.slack_state(),
        }

    def _check_binaries(self) -> None:
        for component in COMPONENTS:
            if component.which() is None:
                raise MissingBinaryError(component.binaries[0], component.package)

    def _process(self, component: Component) -> ChildProcess:
        return ChildProcess(component, self.dir)

    def _start(self, component: Component) -> None:
        port = self.endpoints.port(component)
        ensure_free(self.conf.host, port, component.name, self.settings.data_dir)
        binary = component.which()
        assert binary is not None  # _check_binaries ran
        args, cwd = self._command(component, binary)
        process = self._process(component)
        pid = process.spawn(args, cwd)
        ready_url = self.endpoints.url(component) + component.ready_path
        process.waitready(pid, ready_url, self.conf.start_timeout_seconds)

    def _command(self, component: Component, binary: str) -> tuple[list[str], Path]:
        web = [
            f"--web.listen-address={self.endpoints.address(self.endpoints.port(component))}",
            f"--web.external-url={self.endpoints.url(component)}/",
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
        """In sentinel and cluster modes -redis.addr is the first node (its /metrics is
        not scraped: Prometheus asks /scrape?target= of each, observability/redis_targets.py)
        and the password file holds every node's address."""
        nodes = [target.url for target in redis_targets(self.settings)]
        redis_addr = nodes[0] if nodes else self._redis_addr()
        prefix = self.settings.redis.prefix
        # `*` before stream: also a partition's hash-tagged prefix (skybuffer:{p0-0}:stream:…)
        streams = f"-check-streams={prefix}*stream:*,{prefix}*deadletter"
        listen = f"-web.listen-address={self.endpoints.address(self.conf.exporter_port)}"
        return [
            binary,
            f"-redis.addr={redis_addr}",
            *self.keys.exporter_auth(redis_addr, nodes),
            streams,
            listen,
        ]

    def _redis_addr(self) -> str:
        redis_settings = self.settings.redis
        if redis_settings.url:
            parts = urlsplit(redis_settings.url)
            return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"
        return f"redis://{redis_settings.host}:{redis_settings.port}"
