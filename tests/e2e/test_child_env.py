"""The Slack webhook reaches Alertmanager through its api_url_file (0600) and no other
process: not the environment or arguments of any child `skybuffer run` starts, not a log.

The children are read through /proc/<pid>/environ: each is a descendant of the `run`
this test started. The `run` process itself holds the URL (it writes the secret file).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from skybuffer.observability.stack import missing_binaries
from skybuffer.settings import Settings
from tests.conftest import free_port, stop_pid
from tests.e2e.test_run import _completed_runs, _settings_from, isolated_env

TOKEN = "xoxwebhook0tok3n0only0for0alertmanager"
WEBHOOK = f"http://127.0.0.1:9/services/T0SKY/B0SKY/{TOKEN}"
PASSWORD = "pipeline-password-0only0for0skybuffer"
THIRD_PARTY = (
    "redis-server",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-redis-exporter",
    "prefect",
)


def _environ(proc: psutil.Process) -> bytes:
    return Path(f"/proc/{proc.pid}/environ").read_bytes()


def _program(proc: psutil.Process, run_pid: int) -> str:
    """What a descendant of `run` belongs to: the program of its ancestor that `run`
    started (redis-server, prometheus, prefect, ...; "skybuffer" for `skybuffer serve`
    and its flow runs)."""
    while proc.ppid() != run_pid:
        proc = psutil.Process(proc.ppid())
    cmdline = proc.cmdline()  # redis-server rewrites its own into one string
    names = [os.path.basename(part) for part in " ".join(cmdline).split()[:3]]
    if "skybuffer" in names:
        return "skybuffer"
    return next((n for n in names if n in THIRD_PARTY), " ".join(cmdline))


@pytest.mark.slow
def test_the_webhook_reaches_only_alertmanagers_secret_file(tmp_path: Path) -> None:
    if missing_binaries():
        pytest.skip(f"monitoring stack not installed: {missing_binaries()}")
    env = isolated_env(
        tmp_path,
        SKYBUFFER_SLACK_WEBHOOK_URL=WEBHOOK,
        SKYBUFFER_REDIS__PASSWORD=PASSWORD,
        SKYBUFFER_WRITER__SCHEDULE="3",
        SKYBUFFER_STACK__PROMETHEUS_PORT=str(free_port()),
        SKYBUFFER_STACK__ALERTMANAGER_PORT=str(free_port()),
        SKYBUFFER_STACK__EXPORTER_PORT=str(free_port()),
    )
    settings = _settings_from(env)
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "skybuffer", "run", "--source", "synthetic", "--rate", "200"]
    with open(log, "wb") as stderr:
        run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    seen: dict[int, str] = {}
    try:
        _watch_children(run, settings, seen, log)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        stop_pid(run.pid)
    assert {*THIRD_PARTY, "skybuffer"} <= set(seen.values()), seen
    _assert_only_the_secret_file_holds_it(settings.data_dir)


def _watch_children(
    run: subprocess.Popen[bytes], settings: Settings, seen: dict[int, str], log: Path
) -> None:
    """Check every descendant of ``run`` as it appears, until a scheduled DataWriter run
    completed (so flow-run subprocesses had their chance to be seen too)."""
    api_url = f"http://127.0.0.1:{settings.prefect.port}/api"
    deadline = time.monotonic() + 300
    run_cmdline = psutil.Process(run.pid).cmdline()
    while _completed_runs(api_url) < 1 or len(set(seen.values())) < len(THIRD_PARTY) + 1:
        assert run.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"children seen: {seen}; {log.read_text()[-2000:]}"
        for child in psutil.Process(run.pid).children(recursive=True):
            if child.pid not in seen:
                try:
                    if child.cmdline() in ([], run_cmdline):
                        continue  # forked, not yet exec'd: look again at the next poll
                    seen[child.pid] = _check(child, run.pid)
                except (psutil.NoSuchProcess, ProcessLookupError, FileNotFoundError):
                    continue  # gone before we could read it (a short flow-run helper)
        time.sleep(0.2)


def _check(child: psutil.Process, run_pid: int) -> str:
    """The webhook in no child's environment or arguments; the pipeline's password only
    in skybuffer's own children, which connect to Redis with it."""
    program = _program(child, run_pid)
    environ, cmdline = _environ(child), " ".join(child.cmdline())
    assert TOKEN.encode() not in environ, f"webhook in the environment of {program}"
    assert TOKEN not in cmdline and PASSWORD not in cmdline, f"secret in the args of {program}"
    if program == "skybuffer":
        assert PASSWORD.encode() in environ, "skybuffer serve lost the settings it needs"
    else:
        assert b"SKYBUFFER_" not in environ, f"SKYBUFFER_ variables reached {program}"
    return program


def _assert_only_the_secret_file_holds_it(data_dir: Path) -> None:
    secret = data_dir / "stack" / "secrets" / "slack_webhook_url"
    assert secret.read_text().strip() == WEBHOOK
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    holders = [
        str(path.relative_to(data_dir))
        for path in data_dir.rglob("*")
        if path.is_file() and not path.is_symlink() and TOKEN.encode() in path.read_bytes()
    ]
    assert holders == ["stack/secrets/slack_webhook_url"], holders
