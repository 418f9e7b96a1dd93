"""`skybuffer stack up|down|status`: the committed files, loopback only, stopped by pid.

Also covers: skybuffer.observability.programs, skybuffer.observability.stack_secrets,
skybuffer.observability.stack_layout (through the behaviour above).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from skybuffer.errors import ConfigError, MissingBinaryError
from skybuffer.observability.stack import (
    Stack,
    missing_binaries,
    stack_available,
    stack_down,
    stack_status,
    stack_up,
)
from skybuffer.observability.stack_secrets import SLACK_PLACEHOLDER
from skybuffer.settings import Settings, StackSettings

from .harness import CONFIG, require, stack_settings

pytestmark = pytest.mark.slow


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_missing_binaries_are_named_with_their_debian_package(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert missing_binaries() == {
        "prometheus-redis-exporter": "prometheus-redis-exporter",
        "prometheus-alertmanager": "prometheus-alertmanager",
        "prometheus": "prometheus",
    }
    assert not stack_available()
    with pytest.raises(MissingBinaryError) as error:
        stack_up(make_settings(), stack_settings(CONFIG))
    assert "apt-get install prometheus-redis-exporter" in str(error.value)


def test_the_stack_listens_on_loopback_only() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        StackSettings(host="0.0.0.0")


def test_without_a_webhook_alertmanager_gets_a_failing_placeholder_and_status_says_so(
    make_settings: Callable[..., Settings],
) -> None:
    settings, conf = make_settings(), stack_settings(CONFIG)
    Stack(settings, conf).layout.lay_out()
    secret = settings.data_dir / "stack" / "secrets" / "slack_webhook_url"
    assert secret.read_text() == SLACK_PLACEHOLDER
    assert stack_status(settings, conf)["slack"].startswith("not configured")


def test_the_webhook_url_is_taken_from_the_environment_and_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://hooks.slack.com/services/TSKY/BSKY/envtoken"
    monkeypatch.setenv("SKYBUFFER_SLACK_WEBHOOK_URL", url)
    conf = StackSettings()
    assert conf.slack_webhook_url is not None
    assert conf.slack_webhook_url.get_secret_value() == url
    assert "envtoken" not in repr(conf) + str(conf)


def test_stack_up_runs_the_committed_files_on_loopback_and_down_stops_it_by_pid(
    make_settings: Callable[..., Settings],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
    tmp_path: Path,
) -> None:
    webhook = tmp_path / "webhook"
    webhook.write_text("https://hooks.slack.com/services/TSKY/BSKY/filetoken\n")
    settings = make_settings()
    conf = stack_settings(CONFIG, slack_webhook_file=webhook)
    urls = run_stack(settings, conf)
    assert urls["prometheus"] == f"http://127.0.0.1:{conf.prometheus_port}"
    _assert_layout(settings.data_dir / "stack")

    status = stack_status(settings, conf)
    assert status["slack"] == "configured"
    pids = {name: c["pid"] for name, c in status["components"].items()}
    assert all(c["running"] and c["ready"] for c in status["components"].values()), status
    for pid in pids.values():
        _assert_listens_on_loopback_only(pid)

    stack_up(settings, conf)  # again: nothing restarted
    assert {n: c["pid"] for n, c in stack_status(settings, conf)["components"].items()} == pids

    assert set(stack_down(settings, conf).values()) == {"stopped"}
    assert not any(c["running"] for c in stack_status(settings, conf)["components"].values())
    assert not any(_alive(pid) for pid in pids.values())
    assert set(stack_down(settings, conf).values()) == {"not running"}


def _assert_layout(stack_dir: Path) -> None:
    """The committed files are linked, not copied; secrets are private."""
    assert (stack_dir / "prometheus" / "prometheus.yml").resolve() == (
        CONFIG / "prometheus" / "prometheus.yml"
    )
    assert (stack_dir / "prometheus" / "rules").resolve() == CONFIG / "prometheus" / "rules"
    assert (stack_dir / "alertmanager" / "alertmanager.yml").resolve() == (
        CONFIG / "alertmanager" / "alertmanager.yml"
    )
    assert _mode(stack_dir / "secrets") == 0o700
    for secret in (stack_dir / "secrets").iterdir():
        assert _mode(secret) == 0o600, secret
    assert (stack_dir / "secrets" / "slack_webhook_url").read_text().endswith("filetoken")
    require("promtool")
    check = subprocess.run(
        ["promtool", "check", "config", str(stack_dir / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def _assert_listens_on_loopback_only(pid: int) -> None:
    listening = [
        conn.laddr
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening, f"pid {pid} listens nowhere"
    assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_port_in_use_names_the_setting_to_change_and_leaves_nothing_running(
    make_settings: Callable[..., Settings],
) -> None:
    require("prometheus", "prometheus-alertmanager", "prometheus-redis-exporter")
    settings, conf = make_settings(), stack_settings(CONFIG)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", conf.prometheus_port))
        busy.listen()
        with pytest.raises(ConfigError, match="stack.prometheus_port"):
            stack_up(settings, conf)
    assert not any(c["running"] for c in stack_status(settings, conf)["components"].values())
