"""The files a containerized deployment's Redis processes start with (docker compose's
``redis-acl`` service), from the committed config/redis/ files, for the deployment's
``redis.mode``.

Every Redis container runs the committed redis.conf as it is, plus what this writes into
the Redis volume (``{data_dir}/redis``, owner-only): ``users.acl`` (the committed users
with their password hashes; sentinel and cluster modes add the ``replica`` user, and the
``sentinel`` user the sentinels reconfigure nodes as), ``replication.conf`` (included by
every node: the user and password a node replicates as -- a password never on a command
line), each node's own directory, and in sentinel mode each sentinel's ``sentinel.conf``
(written once: a sentinel rewrites it with what it learns). The same templates and the
same users as the local topologies of buffer/sentinel.py and buffer/cluster.py; what
differs is only the addresses: service names instead of loopback ports.
"""

from __future__ import annotations

from pathlib import Path

from skybuffer.buffer.sentinel_process import Secrets, SentinelProcess
from skybuffer.buffer.users import USERS, AclUsers
from skybuffer.errors import ConfigError
from skybuffer.privilege import private_dir, write_private
from skybuffer.settings import RedisSettings

PRIMARY = ("redis", 6379)
"""The first primary of the sentinel topology: the compose service ``redis``."""
SENTINEL_PORT = 26379
SENTINELS = 3
CLUSTER_NODES = 6
TOPOLOGY_USERS = (*USERS, "replica", "sentinel", "sentinels")


def render(settings: RedisSettings, redis_dir: Path) -> list[Path]:
    """Write the deployment's files for ``settings.mode`` into ``redis_dir``; returns
    what it wrote or created."""
    private_dir(redis_dir)
    users = AclUsers(settings, redis_dir / "secrets", TOPOLOGY_USERS)
    written = [_acl(settings, users, redis_dir), _replication(settings, users, redis_dir)]
    if settings.mode == "sentinel":
        written += [private_dir(redis_dir / "node-2")]
        written += _sentinels(settings, users, redis_dir)
    if settings.mode == "cluster":
        written += [private_dir(redis_dir / f"cluster-{n}") for n in range(1, CLUSTER_NODES + 1)]
    return written


def _acl(settings: RedisSettings, users: AclUsers, redis_dir: Path) -> Path:
    templates = settings.conf.parent
    text = users.rendered(templates / "users.acl")
    if settings.mode != "standalone":
        extra = users.rendered(templates / "users-sentinel.acl")
        if settings.mode == "cluster":  # as the local cluster: no sentinels, no sentinel user
            extra = "".join(
                f"{line}\n" for line in extra.splitlines() if line.startswith("user replica ")
            )
        text += extra
    path = redis_dir / "users.acl"
    write_private(path, text)
    return path


def _replication(settings: RedisSettings, users: AclUsers, redis_dir: Path) -> Path:
    path = redis_dir / "replication.conf"
    if settings.mode == "standalone":
        write_private(path, "# standalone: no replication\n")
    else:
        password = users.credentials("replica").password
        write_private(path, f"masteruser replica\nmasterauth {password}\n")
    return path


def _sentinels(settings: RedisSettings, users: AclUsers, redis_dir: Path) -> list[Path]:
    if not users.credentials("sentinels").password:
        raise ConfigError(
            "redis.sentinel_password is empty: set SKYBUFFER_REDIS_SENTINEL_PASSWORD (the "
            "sentinels' own password; the pipeline finds the primary through them with it)"
        )
    secrets = Secrets(
        users.credentials("sentinels").password,
        users.credentials("sentinel").password,
        users.rendered(settings.conf.parent / "sentinel.acl"),
    )
    written = []
    for number in range(1, SENTINELS + 1):
        directory = private_dir(redis_dir / f"sentinel-{number}")
        sentinel = SentinelProcess(directory, "0.0.0.0", SENTINEL_PORT)
        sentinel.render(settings, PRIMARY, secrets, hostnames=True)
        written.append(sentinel.conf)
    return written
