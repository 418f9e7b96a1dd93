"""A local Prefect server on SQLite, for `skybuffer run` (an ephemeral server cannot
schedule: the scheduler service only runs in `prefect server start`).

The server's home (SQLite database, logs) is ``{data_dir}/prefect``, its API is on
loopback, telemetry is off. It is a child process started with the `prefect` executable
of this environment and stopped by the pid it was started with. Nothing here imports
Prefect: only flows.py does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from skybuffer import processes
from skybuffer.datadir import ensure_free, port_of
from skybuffer.errors import ConfigError
from skybuffer.privilege import program_env
from skybuffer.settings import PrefectSettings


def prefect_env(base: dict[str, str], home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment of every Prefect process skybuffer starts: ``base`` (see privilege.py:
    the server gets no SKYBUFFER_ variable, `skybuffer serve` no Slack webhook) with a
    local home and no telemetry."""
    env = {
        **base,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


class PrefectServer:
    """`prefect server start` as a child process of one data dir."""

    def __init__(self, settings: PrefectSettings, home: Path) -> None:
        self.settings = settings
        self.home = home
        self.logfile = home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return port_of(self.settings.port, "prefect")

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        if self.healthy():
            raise ConfigError(
                f"something already serves {self.api_url}: set PREFECT_API_URL to use it, or "
                "SKYBUFFER_PREFECT__PORT to start skybuffer's own server on another port"
            )
        ensure_free(self.settings.host, self.port, "prefect", self.home.parent)
        self.home.mkdir(parents=True, exist_ok=True)
        command = [_prefect_executable(), "server", "start"]
        with open(self.logfile, "ab") as log:
            self.process = processes.spawn(
                [*command, "--host", self.settings.host, "--port", str(self.port)],
                cwd=None,
                log=log,
                env=self._env(),
            )
        self._wait_healthy()

    def _env(self) -> dict[str, str]:
        """The UI asks its server where the API is (/ui-settings): tell it, or it calls
        port 4200 whatever port this server listens on."""
        return prefect_env(program_env(), self.home) | {"PREFECT_UI_API_URL": self.api_url}

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_seconds
        while time.monotonic() < deadline:
            if self.healthy():
                return
            if self.process is not None and self.process.poll() is not None:
                raise ConfigError(f"prefect server exited at start; see {self.logfile}")
            time.sleep(0.5)
        self.stop()
        raise ConfigError(
            f"prefect server did not answer within {self.settings.start_timeout_seconds:.0f}s; "
            f"see {self.logfile}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server we started (its whole process group), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is not None:
            processes.stop_process_group(process, timeout)


def _prefect_executable() -> str:
    beside = Path(sys.executable).with_name("prefect")
    if beside.exists():
        return str(beside)
    found = shutil.which("prefect")
    if found is None:
        raise ConfigError(
            "the `prefect` executable is missing from this environment; reinstall skybuffer "
            "with its dependencies (make run, or pip install -e .)"
        )
    return found
