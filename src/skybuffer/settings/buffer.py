"""The buffer's settings: where Redis is, its topology (standalone, sentinel, cluster),
its partitions, and how skybuffer treats it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from skybuffer.constants import DEFAULT_PREFIX
from skybuffer.settings.base import PACKAGE_DIR, Section


def _default_redis_conf() -> Path:
    """The committed redis.conf: beside the package in a checkout, or installed data."""
    for candidate in (
        PACKAGE_DIR.parent.parent / "config" / "redis" / "redis.conf",
        PACKAGE_DIR / "data" / "redis.conf",
    ):
        if candidate.exists():
            return candidate
    return PACKAGE_DIR.parent.parent / "config" / "redis" / "redis.conf"


REDIS_MODES = ("standalone", "sentinel", "cluster")


class RedisSettings(Section):
    """Where the buffer lives and how skybuffer treats it."""

    url: str | None = None
    """An external Redis (redis://user:pass@host:port/0). Unset: skybuffer manages its own."""
    prefix: str = DEFAULT_PREFIX
    """Prefix of every key; a hash-tagged prefix (skybuffer:{p0}:) suits Redis Cluster."""
    conf: Path = Field(default_factory=_default_redis_conf)
    """The redis.conf the managed server starts with."""
    host: str = "127.0.0.1"
    """Address of the managed server (loopback only)."""
    port: int | None = None
    """Port of the managed server (loopback only); unset: chosen free per data dir (its
    pipeline.json)."""
    maxmemory: str | None = None
    """Overrides maxmemory of the conf for the managed server (e.g. '30mb' in tests)."""
    password: SecretStr | None = None
    """Password of the 'skybuffer' ACL user; generated into the data dir when unset."""
    exporter_password: SecretStr | None = None
    """Password of the read-only 'exporter' ACL user; generated when unset."""
    socket_timeout_seconds: float = 10.0
    """A Redis call that takes longer fails (and is retried by its caller), never hangs."""
    start_timeout_seconds: float = 120.0
    """How long `redis start` waits for the AOF to load before giving up."""
    mode: str = "standalone"
    """The topology: 'standalone' (one server), 'sentinel' (a primary, a replica and
    three sentinels that fail over by themselves; clients find the primary through them)
    or 'cluster' (Redis Cluster: three primaries with a replica each, the partitions spread
    over their hash slots). Unset: the mode `skybuffer redis start --mode` recorded in the
    data dir."""
    partitions: int | None = Field(default=None, ge=1, le=64)
    """Partitions of the buffer: events spread by a hash of their DID (one account's
    events stay in order in one), each partition a hash-tagged key prefix
    (skybuffer:{p0-…}:) with its own streams, cursor, leases and ingest lane. Unset: 1
    (the plain prefix, as before), or 3 in cluster mode (one per primary; 6 also spreads
    evenly over three)."""
    sentinels: list[str] = Field(default_factory=list)
    """host:port of each sentinel of an external sentinel deployment; empty: the local
    topology of the data dir (`skybuffer redis start --mode sentinel`)."""
    sentinel_master: str = "skybuffer"
    """The name the sentinels monitor the primary under."""
    sentinel_password: SecretStr | None = None
    """Password of the sentinels themselves (their requirepass): an external deployment's,
    unset if its sentinels require none; the local topology's is generated into the data
    dir when unset."""
    sentinel_down_after_ms: int = Field(default=5000, ge=100)
    """Local topology: a primary silent this long is down for a sentinel (its failover
    begins once 2 of the 3 agree)."""
    sentinel_failover_timeout_ms: int = Field(default=10_000, ge=1000)
    """Local topology: how long a failover may take before another sentinel retries it."""
    cluster_nodes: list[str] = Field(default_factory=list)
    """host:port of nodes of an external Redis Cluster (any few: the rest are found);
    empty: the local cluster of the data dir (`skybuffer redis start --mode cluster`)."""
    cluster_node_timeout_ms: int = Field(default=3000, ge=100)
    """Local cluster: a primary silent this long is failed over to its replica."""

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in REDIS_MODES:
            raise ValueError(f"must be one of {', '.join(REDIS_MODES)}, not {value!r}")
        return value

    @property
    def partition_count(self) -> int:
        if self.partitions is not None:
            return self.partitions
        return 3 if self.mode == "cluster" else 1

    @field_validator("sentinels", "cluster_nodes", mode="before")
    @classmethod
    def _address_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [a.strip() for a in value.split(",") if a.strip()]
        for address in value if isinstance(value, list) else []:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{address!r} is not host:port")
        return value
