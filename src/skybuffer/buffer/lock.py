"""A Redis lock with expiry: at most one DataWriter run at a time, and a crashed run
cannot hold the slot forever (the known failure mode of orchestrator concurrency slots).
"""

from __future__ import annotations

import secrets

import redis

# Delete the lock only if we still hold it (it may have expired and been taken since).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock:
    """SET key token NX PX ttl; released only by its holder."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = secrets.token_hex(16)

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> bool:
        return bool(self.client.eval(_RELEASE, 1, self.key, self.token))

    def holder_ttl_seconds(self) -> float:
        """Seconds until the current holder's lock expires (0 when free)."""
        return max(0, int(self.client.pttl(self.key))) / 1000
