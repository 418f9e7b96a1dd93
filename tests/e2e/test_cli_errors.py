"""What a user sees when something is wrong: one line naming the fix, the exit code
`skybuffer --help` documents, and nothing created or started behind their back.

Also covers: skybuffer.errors, skybuffer.cli (through the behaviour above).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skybuffer.buffer.server import ManagedRedis
from skybuffer.datadir import RECORD
from skybuffer.errors import EXIT_CODES
from skybuffer.settings import Settings
from tests.conftest import free_port

DEADLINE = 120.0
READ_ONLY = (
    ["status"],
    ["status", "--json"],
    ["redis", "status"],
    ["redis", "stop"],
    ["audit"],
    ["deadletter", "list"],
    ["deadletter", "export"],
    ["stack", "status"],
    ["stack", "down"],
)


def bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYBUFFER_", "PREFECT_"))}
    return {**env, **extra}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "skybuffer", *args]
    return subprocess.run(
        command, cwd=cwd, env=bare_env(**env), capture_output=True, text=True, timeout=DEADLINE
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return lines[0]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another program listens on for the test's duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_commands_create_nothing_where_no_pipeline_is(
    tmp_path: Path, args: list[str]
) -> None:
    done = cli(tmp_path, *args)
    assert done.returncode == 3, done.stderr
    assert f"no skybuffer pipeline at {tmp_path / 'var'}" in one_error_line(done)
    assert list(tmp_path.iterdir()) == []


def test_read_only_commands_do_not_start_the_redis_of_a_pipeline(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    server = ManagedRedis(settings.redis, settings.redis_dir)
    server.start()
    server.stop()
    port = str(settings.redis.port)
    for args in (["status"], ["audit"], ["deadletter", "list"]):
        done = cli(tmp_path, *args, SKYBUFFER_REDIS__PORT=port)
        assert done.returncode == 3
        assert "is not running: start it with `skybuffer redis start`" in one_error_line(done)
        assert server.pid() is None and not server.is_serving()


def test_the_default_data_dir_is_the_nearest_var_holding_a_pipeline(tmp_path: Path) -> None:
    started = cli(tmp_path, "redis", "start")
    assert started.returncode == 0, started.stderr
    try:
        deeper = tmp_path / "a" / "b"
        deeper.mkdir(parents=True)
        said = cli(deeper, "redis", "status")
        assert said.returncode == 0, said.stderr
        assert str(tmp_path / "var" / "redis") in said.stdout
        assert not (deeper / "var").exists()
    finally:
        assert cli(tmp_path, "redis", "stop").returncode == 0


def test_a_rejected_ingest_starts_nothing(tmp_path: Path) -> None:
    for args in (["--source", "firehose"], ["--source", "replay"]):
        done = cli(tmp_path, "ingest", *args)
        assert done.returncode == 2
        one_error_line(done)
    assert list(tmp_path.iterdir()) == []


def test_malformed_toml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[redis\nport = 1\n")
    done = cli(tmp_path, "status", "--config", "bad.toml")
    assert done.returncode == 2
    line = one_error_line(done)
    assert "not valid TOML" in line and "line 1" in line


def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    done = cli(tmp_path, "status", SKYBUFFER_REDIS__URL=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 3
    assert "cannot reach Redis" in one_error_line(done)


@pytest.mark.parametrize("login", ["skybuffer:wrong@", ""], ids=["wrong password", "none"])
def test_a_refused_login_is_one_line_naming_the_password_setting(
    redis_server: ManagedRedis, tmp_path: Path, login: str
) -> None:
    url = f"redis://{login}127.0.0.1:{redis_server.port}/0"
    for args in (["status"], ["audit"]):
        done = cli(tmp_path, *args, SKYBUFFER_REDIS__URL=url)
        assert done.returncode == 3, done.stderr
        assert "SKYBUFFER_REDIS__PASSWORD" in one_error_line(done)


def test_a_data_dir_this_user_cannot_use_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere: a path through a file cannot be used
        (tmp_path / "file").write_text("")
        data_dir = tmp_path / "file" / "var"
    else:
        (tmp_path / "locked").mkdir(mode=0o500)
        data_dir = tmp_path / "locked" / "var"
    done = cli(tmp_path, "redis", "start", "--data-dir", str(data_dir))
    assert done.returncode == 2
    assert "give a --data-dir" in one_error_line(done)


def test_a_port_set_explicitly_and_taken_names_its_setting(tmp_path: Path, held_port: int) -> None:
    done = cli(tmp_path, "redis", "start", SKYBUFFER_REDIS__PORT=str(held_port))
    assert done.returncode == 2
    line = one_error_line(done)
    assert f"127.0.0.1:{held_port}" in line and "SKYBUFFER_REDIS__PORT" in line


def test_a_recorded_port_that_is_taken_names_the_record(tmp_path: Path) -> None:
    assert cli(tmp_path, "redis", "start").returncode == 0
    assert cli(tmp_path, "redis", "stop").returncode == 0
    port = ManagedRedis(_settings(tmp_path).redis, tmp_path / "var" / "redis").port
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        done = cli(tmp_path, "redis", "start")
    assert done.returncode == 2
    line = one_error_line(done)
    assert str(tmp_path / "var" / RECORD) in line and "SKYBUFFER_REDIS__PORT" in line


def test_help_documents_every_exit_code(tmp_path: Path) -> None:
    done = cli(tmp_path, "--help", COLUMNS="200")
    assert done.returncode == 0
    for code in EXIT_CODES:
        assert f"{code} " in done.stdout or f"{code}:" in done.stdout
    assert "Exit codes" in done.stdout


def _settings(tmp_path: Path) -> Settings:
    from skybuffer.settings import load_settings

    return load_settings(data_dir=tmp_path / "var")


def test_a_second_ingester_of_a_data_dir_goes_on_without_metrics(tmp_path: Path) -> None:
    """Its recorded /metrics port is the first ingester's: a warning, not a failure."""
    from skybuffer.testbed.generator import generate

    (tmp_path / "few.jsonl").write_bytes(b"\n".join(generate(3, 50, 1_779_717_600_000_000)))
    assert cli(tmp_path, "redis", "start").returncode == 0
    command = [sys.executable, "-m", "skybuffer", "ingest", "--source", "synthetic"]
    first = subprocess.Popen(command, cwd=tmp_path, env=bare_env(), stderr=subprocess.DEVNULL)
    try:
        port = json.loads((tmp_path / "var" / RECORD).read_text())["ports"]["ingest_metrics"]
        deadline = time.monotonic() + DEADLINE
        while not _accepts(port):  # the first ingester serves its /metrics
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        second = cli(tmp_path, "ingest", "--source", "replay", "--file", "few.jsonl")
        assert second.returncode == 0, second.stderr
        assert "serves no /metrics" in second.stderr
        assert "ingested 50 events" in second.stderr + second.stdout
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=DEADLINE)
        assert cli(tmp_path, "redis", "stop").returncode == 0


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "args",
    [["capacity"], ["chaos", "sustained"], ["bench", "redis"]],
    ids=["capacity", "chaos-sustained", "bench-redis"],
)
def test_single_server_experiments_refuse_a_cluster_in_one_line(
    args: list[str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "SKYBUFFER_DATA_DIR": str(tmp_path / "var"),
        "SKYBUFFER_REDIS__MODE": "cluster",
    }
    done = subprocess.run(
        [sys.executable, "-m", "skybuffer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "bench ingest|write --mode cluster" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "var" / "redis").exists()  # nothing was started
