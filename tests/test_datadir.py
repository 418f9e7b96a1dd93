"""A data dir's ports: chosen once, recorded, the same for every command that starts at
the same moment, and never overriding a port that is set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from skybuffer.datadir import CHOSEN_RANGE, PORTS, RECORD, default_data_dir
from skybuffer.settings import load_settings

CLAIM = """
import sys
from skybuffer.settings import load_settings
s = load_settings(data_dir=sys.argv[1])
s.claim_ports()
print(s.redis.port, s.prefect.port, s.stack.prometheus_port)
"""


def test_commands_starting_at_once_on_a_new_data_dir_get_the_same_ports(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "var")
    claims = [
        subprocess.Popen([sys.executable, "-c", CLAIM, data_dir], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    said = {claim.communicate(timeout=60)[0] for claim in claims}
    assert len(said) == 1, said
    recorded = json.loads((tmp_path / "var" / RECORD).read_text())["ports"]
    assert set(recorded) == set(PORTS)
    assert len(set(recorded.values())) == len(PORTS)
    assert all(CHOSEN_RANGE[0] <= port <= CHOSEN_RANGE[1] for port in recorded.values())


def test_later_commands_read_the_record_and_a_set_port_wins_unrecorded(tmp_path: Path) -> None:
    first = load_settings(data_dir=tmp_path / "var")
    first.claim_ports()
    again = load_settings(data_dir=tmp_path / "var")
    assert again.redis.port == first.redis.port
    assert again.metrics.ingest_port == first.metrics.ingest_port
    explicit = load_settings(
        data_dir=tmp_path / "var", redis={"port": 7}, metrics={"ingest_port": 0}
    )
    explicit.claim_ports()
    assert (explicit.redis.port, explicit.metrics.ingest_port) == (7, 0)
    recorded = json.loads((tmp_path / "var" / RECORD).read_text())["ports"]
    assert recorded["redis"] == first.redis.port


def test_a_data_dir_from_before_the_record_keeps_its_redis_port(tmp_path: Path) -> None:
    (tmp_path / "var" / "redis").mkdir(parents=True)
    (tmp_path / "var" / "redis" / "users.acl").write_text("")
    (tmp_path / "var" / "redis" / "endpoint").write_text("127.0.0.1:27001\n")
    settings = load_settings(data_dir=tmp_path / "var")
    assert settings.redis.port == 27001  # read-only commands find it without a record
    settings.claim_ports()
    assert settings.redis.port == load_settings(data_dir=tmp_path / "var").redis.port == 27001


def test_the_default_data_dir_is_found_upwards_else_here(tmp_path: Path) -> None:
    deeper = tmp_path / "project" / "notebooks" / "2026"
    deeper.mkdir(parents=True)
    assert default_data_dir(deeper) == deeper / "var"
    (tmp_path / "project" / "var" / "lake").mkdir(parents=True)  # not a pipeline's yet
    assert default_data_dir(deeper) == deeper / "var"
    (tmp_path / "project" / "var" / RECORD).write_text('{"ports": {}}')
    assert default_data_dir(deeper) == tmp_path / "project" / "var"
    assert not (deeper / "var").exists()


REWRITE = """
import sys
from pathlib import Path
from skybuffer.datadir import record_mode
for i in range(400):
    record_mode(Path(sys.argv[1]), ("standalone", "sentinel")[i % 2])
"""


def test_a_command_reading_the_record_while_another_rewrites_it_never_sees_half_of_it(
    tmp_path: Path,
) -> None:
    """Readers (every Settings) take no lock: the record must be replaced whole."""
    from skybuffer.datadir import recorded_ports

    data_dir = tmp_path / "var"
    load_settings(data_dir=data_dir).claim_ports()
    ports = recorded_ports(data_dir)
    writer = subprocess.Popen([sys.executable, "-c", REWRITE, str(data_dir)])
    reads = 0
    while writer.poll() is None or reads == 0:
        assert recorded_ports(data_dir) == ports  # never empty, never a ConfigError
        reads += 1
    assert writer.returncode == 0
    assert reads > 1
