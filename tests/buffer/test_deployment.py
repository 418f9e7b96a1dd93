"""The files docker compose's Redis processes start with, per redis.mode: the committed
ACL templates with hashed passwords (a real redis-server loads them), the replication
user, each node's directory and, in sentinel mode, each sentinel's config -- private,
and no password in plain text but where Redis needs one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from skybuffer import processes
from skybuffer.buffer.deployment import render
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.users import AclUsers
from skybuffer.datadir import free_port
from skybuffer.errors import ConfigError
from skybuffer.settings import Settings
from tests.conftest import stop_pid


def _private(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


def _settings(make_settings: Callable[..., Settings], mode: str) -> Settings:
    return make_settings(
        redis={"mode": mode, "sentinel_password": "sentinels-secret", "password": "pipe-secret"}
    )


def test_standalone_renders_the_users_acl_the_managed_redis_would(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _settings(make_settings, "standalone")
    render(settings.redis, settings.redis_dir)
    acl = (settings.redis_dir / "users.acl").read_text()
    expected = ManagedRedis(settings.redis, settings.redis_dir).render_acl().read_text()
    assert acl == expected
    assert "user replica " not in acl
    assert (settings.redis_dir / "replication.conf").read_text().startswith("#")


def test_sentinel_mode_adds_the_replication_users_and_three_sentinel_configs(
    make_settings: Callable[..., Settings],
) -> None:
    settings = _settings(make_settings, "sentinel")
    written = render(settings.redis, settings.redis_dir)
    directory = settings.redis_dir
    users = AclUsers(settings.redis, directory / "secrets", ("replica", "exporter"))
    acl = (directory / "users.acl").read_text()
    assert "user replica " in acl and "user sentinel " in acl and "user exporter " in acl
    replica = users.credentials("replica").password
    assert (directory / "replication.conf").read_text() == (
        f"masteruser replica\nmasterauth {replica}\n"
    )
    assert replica not in acl and "pipe-secret" not in acl
    for number in (1, 2, 3):
        conf = (directory / f"sentinel-{number}" / "sentinel.conf").read_text()
        assert "sentinel resolve-hostnames yes" in conf
        assert "sentinel monitor skybuffer redis 6379 2" in conf
        assert "port 26379" in conf and "requirepass sentinels-secret" in conf
        exporter = users.credentials("exporter").password
        assert "user exporter on #" in conf and exporter not in conf
    assert (directory / "node-2").is_dir()
    assert all(_private(path) for path in written)


def test_cluster_mode_adds_the_replica_user_only_and_six_node_directories(
    make_settings: Callable[..., Settings],
) -> None:
    settings = _settings(make_settings, "cluster")
    render(settings.redis, settings.redis_dir)
    acl = (settings.redis_dir / "users.acl").read_text()
    assert "user replica " in acl and "user sentinel " not in acl
    for number in range(1, 7):
        assert _private(settings.redis_dir / f"cluster-{number}")
    assert not (settings.redis_dir / "sentinel-1").exists()


def test_sentinel_mode_without_the_sentinels_password_names_the_variable(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(redis={"mode": "sentinel", "sentinel_password": ""})
    with pytest.raises(ConfigError, match="SKYBUFFER_REDIS_SENTINEL_PASSWORD"):
        render(settings.redis, settings.redis_dir)


def test_a_real_redis_server_loads_the_rendered_acl_and_its_replication_include(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _settings(make_settings, "sentinel")
    render(settings.redis, settings.redis_dir)
    port = free_port()
    args = [
        "redis-server",
        str(settings.redis.conf),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
        *("--aclfile", str(settings.redis_dir / "users.acl"), "--appendonly", "no"),
        *("--include", str(settings.redis_dir / "replication.conf")),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        users = AclUsers(settings.redis, settings.redis_dir / "secrets", ("admin",))
        password = users.credentials("admin").password
        admin = redis.Redis(port=port, username="admin", password=password, decode_responses=True)
        assert processes.wait_until(lambda: _answers(admin), 30, interval=0.05)
        assert {"skybuffer", "exporter", "admin", "replica", "sentinel"} <= set(admin.acl_users())
        assert admin.config_get("masteruser") == {"masteruser": "replica"}
    finally:
        stop_pid(process.pid)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
