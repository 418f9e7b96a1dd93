"""The stack's programs: what each is (binaries, Debian package, health endpoint) and a
running one, known by its pid file in the stack dir (its log beside it), started in a
new session and stopped by that pid only (processes.py), never by name."""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from skybuffer import processes
from skybuffer.errors import ConfigError
from skybuffer.privilege import program_env
from skybuffer.processes import atomic_write


@dataclass(frozen=True)
class Component:
    """One program of the stack: its names, Debian package and health endpoint."""

    name: str
    binaries: tuple[str, ...]
    package: str
    ready_path: str

    def which(self) -> str | None:
        return next(filter(None, map(shutil.which, self.binaries)), None)


EXPORTER = Component(
    name="redis_exporter",
    binaries=("prometheus-redis-exporter", "redis_exporter"),
    package="prometheus-redis-exporter",
    ready_path="/health",
)
ALERTMANAGER = Component(
    name="alertmanager",
    binaries=("prometheus-alertmanager", "alertmanager"),
    package="prometheus-alertmanager",
    ready_path="/-/ready",
)
PROMETHEUS = Component("prometheus", ("prometheus",), "prometheus", "/-/ready")
COMPONENTS = (EXPORTER, ALERTMANAGER, PROMETHEUS)  # start order; stopped in reverse


class ChildProcess:
    """A stack process known by its pid file in the stack dir; its log sits beside it."""

    def __init__(self, component: Component, directory: Path) -> None:
        self.component = component
        self.pidfile = directory / f"{component.name}.pid"
        self.logfile = directory / f"{component.name}.log"

    def pid(self) -> int | None:
        """The pid of our running process; None if absent, exited or a recycled pid."""
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                processes.reap(pid)
                return None
            program = os.path.basename(proc.cmdline()[0])
        except (FileNotFoundError, ValueError, IndexError, psutil.Error):
            return None
        return pid if program in self.component.binaries else None

    def spawn(self, args: list[str], cwd: Path) -> int:
        with open(self.logfile, "ab") as log:
            # No SKYBUFFER_ variable (the Slack webhook, passwords): the webhook reaches
            # Alertmanager only through its api_url_file, the exporter's password in a file.
            pid = processes.spawn(args, cwd=cwd, log=log, env=program_env()).pid
        atomic_write(self.pidfile, f"{pid}\n")
        return pid

    def waitready(self, pid: int, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200; fail early when the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not processes.alive(pid):
                self.pidfile.unlink(missing_ok=True)
                raise ConfigError(f"{self.component.name} exited at start: {self.log_tail()}")
            if ready(url):
                return
            time.sleep(0.1)
        self.stop(timeout=5)
        raise ConfigError(
            f"{self.component.name} was not ready within {timeout:.0f}s: {self.log_tail()}"
        )

    def reload(self) -> None:
        """Re-read config and rules (SIGHUP); the exporter has nothing to reload."""
        pid = self.pid()
        if pid is not None and self.component is not EXPORTER:
            os.kill(pid, signal.SIGHUP)

    def stop(self, timeout: float) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True when a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        processes.stop_pid(pid, timeout)
        self.pidfile.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return "(no log)"
        return f"see {self.logfile}: " + " | ".join(text)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
