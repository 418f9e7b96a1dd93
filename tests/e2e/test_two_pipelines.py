"""Two pipelines on one machine, from two data dirs, with no port settings at all: each
data dir chooses its own free ports at its first start, and every command run inside it
(from a subdirectory too) finds its own services again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from skybuffer.datadir import PORTS, RECORD
from skybuffer.observability.stack import missing_binaries
from tests.conftest import stop_pid

DEADLINE = 300.0
"""Bounds a hang only."""


def bare_env() -> dict[str, str]:
    """This machine's environment without any skybuffer or Prefect setting: no data dir,
    no port, no API URL."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SKYBUFFER_", "PREFECT_"))}


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "skybuffer", *args]
    return subprocess.run(
        command, cwd=cwd, env=bare_env(), capture_output=True, text=True, timeout=DEADLINE
    )


def status_of(cwd: Path) -> dict[str, Any] | None:
    done = cli(cwd, "status", "--json")
    return json.loads(done.stdout) if done.returncode == 0 else None


def buffered(cwd: Path) -> int:
    status = status_of(cwd)
    return sum(s["events"] for s in status["streams"].values()) if status else 0


def wait_for(what: str, check: Any) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_two_pipelines_with_no_port_settings_run_side_by_side(tmp_path: Path) -> None:
    stack = not missing_binaries()
    homes = [tmp_path / "alice", tmp_path / "bob"]
    runs: list[subprocess.Popen[bytes]] = []
    for home in homes:
        (home / "notes").mkdir(parents=True)
        args = ["run", "--source", "synthetic", "--rate", "300", "--no-writer"]
        runs.append(
            subprocess.Popen(
                [sys.executable, "-m", "skybuffer", *args, *([] if stack else ["--no-stack"])],
                cwd=home,
                env=bare_env(),
                stdout=subprocess.DEVNULL,
                stderr=open(home / "run.log", "wb"),  # noqa: SIM115 - the child keeps it
            )  # fmt: skip
        )
    try:
        # Both ingest; `status` from a subdirectory finds the data dir above it.
        for home in homes:
            wait_for(f"{home.name} to buffer events", lambda h=home: buffered(h / "notes"))
        ports = [json.loads((h / "var" / RECORD).read_text())["ports"] for h in homes]
        assert set(ports[0]) == set(ports[1]) == set(PORTS)
        assert not set(ports[0].values()) & set(ports[1].values())

        # Each status reports its own Redis: stop one pipeline, the other's figures go on.
        for home, chosen in zip(homes, ports, strict=True):
            said = cli(home / "notes", "redis", "status", "--json")
            assert said.returncode == 0, said.stderr
            assert json.loads(said.stdout)["port"] == chosen["redis"]
            assert json.loads(said.stdout)["dir"] == str(home / "var" / "redis")
        if stack:
            for chosen in ports:
                prometheus = f"http://127.0.0.1:{chosen['prometheus']}/-/ready"
                wait_for("each pipeline's Prometheus", lambda url=prometheus: ready(url))

        runs[0].send_signal(signal.SIGINT)
        assert runs[0].wait(timeout=DEADLINE) == 0, (homes[0] / "run.log").read_text()[-2000:]
        before = buffered(homes[1])
        wait_for("bob's pipeline to go on", lambda: buffered(homes[1]) > before)
        stopped = cli(homes[0], "status")
        assert stopped.returncode == 3
        assert "not running" in stopped.stderr and "\n" not in stopped.stderr.strip()
    finally:
        for run in runs:
            if run.poll() is None:
                run.send_signal(signal.SIGINT)
                try:
                    run.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    stop_pid(run.pid)
    assert runs[1].returncode == 0, (homes[1] / "run.log").read_text()[-2000:]
    for home in homes:  # each run stopped the Redis it started
        assert cli(home, "redis", "status").returncode == 1
