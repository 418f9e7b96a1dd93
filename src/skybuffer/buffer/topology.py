"""The data dir's Redis as its ``redis.mode`` has it, and a client for it: an external
Redis (``redis.url``), the managed redis-server (buffer/server.py), or the sentinel
topology (buffer/sentinel.py). What every command uses to reach the buffer."""

from __future__ import annotations

from pathlib import Path

import redis

from skybuffer.buffer.cluster import ClusterTopology
from skybuffer.buffer.sentinel import SentinelTopology
from skybuffer.buffer.server import ManagedRedis, no_retry
from skybuffer.settings import RedisSettings


def managed(
    settings: RedisSettings, redis_dir: Path
) -> ManagedRedis | SentinelTopology | ClusterTopology:
    """The data dir's Redis as its mode has it: one server, the sentinel topology, or the
    cluster."""
    if settings.mode == "cluster":
        return ClusterTopology(settings, redis_dir)
    if settings.mode == "sentinel":
        return SentinelTopology(settings, redis_dir)
    return ManagedRedis(settings, redis_dir)


def connect(settings: RedisSettings, redis_dir: Path, prefix: str | None = None) -> redis.Redis:
    """A client for the pipeline user: the external Redis of ``url``, or the managed one
    of this data dir (which the caller started, or which runs already: see
    ``ManagedRedis.start``, and the CLI's ``redis_for_command``); in sentinel mode, the
    primary the sentinels name, found again after each failover (buffer/sentinel.py); in
    cluster mode, the primary of ``prefix``'s slot (a partition's: buffer/partitions.py),
    found again after each failover (buffer/cluster.py)."""
    if settings.mode == "cluster":
        return ClusterTopology(settings, redis_dir).client(prefix=prefix)
    if settings.mode == "sentinel" and not settings.url:
        return SentinelTopology(settings, redis_dir).client()
    if settings.url:
        return redis.Redis.from_url(
            settings.url,
            socket_timeout=settings.socket_timeout_seconds,
            socket_connect_timeout=2,
            retry=no_retry(),
        )
    return ManagedRedis(settings, redis_dir).client()
