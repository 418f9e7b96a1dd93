"""The managed redis-server: config as committed, least privilege, clean stop.

Also covers: skybuffer.buffer.aof, skybuffer.buffer.users (through the behaviour above).
"""

from __future__ import annotations

import os
import stat

import pytest
import redis

from skybuffer.buffer.server import ManagedRedis, no_retry
from skybuffer.datadir import free_port
from skybuffer.errors import ConfigError, MissingBinaryError


def test_managed_redis_runs_the_committed_profile(redis_server: ManagedRedis) -> None:
    admin = redis_server.client("admin")
    config = admin.config_get("*")
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert int(config["maxmemory"]) == 2 * 1024**3
    assert config["protected-mode"] == "yes"
    assert config["bind"].startswith("127.0.0.1")


def test_passwords_are_generated_once_into_private_files(redis_server: ManagedRedis) -> None:
    for user in ("skybuffer", "exporter", "admin"):
        path = redis_server.secrets_dir / f"{user}.password"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert len(path.read_text()) >= 32
    again = ManagedRedis(redis_server.settings, redis_server.directory)
    assert again.credentials().password == redis_server.credentials().password


def test_default_user_is_disabled(redis_server: ManagedRedis) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=redis_server.settings.port, retry=no_retry())
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        anonymous.ping()


def test_pipeline_user_is_confined_to_its_prefix_and_commands(client: redis.Redis) -> None:
    client.xadd("skybuffer:stream:likes", {"v": "1"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("elsewhere", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.xadd("other:stream", {"v": "1"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.shutdown()


def test_exporter_user_is_read_only(redis_server: ManagedRedis) -> None:
    exporter = redis_server.client("exporter")
    assert "used_memory" in exporter.info("memory")
    with pytest.raises(redis.exceptions.NoPermissionError):
        exporter.xadd("skybuffer:stream:likes", {"v": "1"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        exporter.delete("skybuffer:stream:likes")


def test_transactions_in_the_aof_survive_a_restart(redis_server: ManagedRedis) -> None:
    client = redis_server.client()
    client.xadd("skybuffer:stream:posts", {"v": "1"})
    with client.pipeline(transaction=True) as pipe:  # what the producer does: MULTI/EXEC
        pipe.xadd("skybuffer:stream:posts", {"v": "2"})
        pipe.hincrby("skybuffer:events", "posts", 2)
        pipe.execute()
    assert redis_server.stop()
    assert redis_server.pid() is None
    assert redis_server.start()
    client = redis_server.client()
    assert client.xlen("skybuffer:stream:posts") == 2
    assert client.hget("skybuffer:events", "posts") == b"2"


def test_start_without_redis_server_names_the_package(
    redis_server: ManagedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_server.stop()
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingBinaryError, match="apt-get install redis-server"):
        redis_server.start()


def test_a_second_server_on_the_same_data_dir_is_refused_and_stop_still_works(
    redis_server: ManagedRedis,
) -> None:
    """Settings that changed port since start must not put two servers on one AOF."""
    other_port = redis_server.settings.model_copy(update={"port": free_port()})
    same_dir = ManagedRedis(other_port, redis_server.directory)
    with pytest.raises(ConfigError, match=f"127.0.0.1:{redis_server.settings.port}"):
        same_dir.start()
    assert same_dir.stop()  # by the recorded pid: SIGTERM is a graceful shutdown
    assert redis_server.pid() is None
    assert "Calling fsync() on the AOF file" in redis_server.logfile.read_text()
