"""Leases: one owner per role (an ingester per source cursor, a DataWriter per prefix).

A lease is a Redis hash ``{token, pid, host, since, what}`` with an expiry. Its owner
renews it from a heartbeat thread; a crashed owner frees it by itself when the expiry
passes, and one that died on this host (its pid is gone) frees it at once. A stalled
owner (SIGSTOP, a GC pause, a partition) keeps running after its lease expired, so the
lease is also a **fence**: every script that commits work checks the token in the same
atomic step (``FENCE_LUA`` is pasted into them), and a stale owner's commit is refused
with ``FENCED``. Acquiring is idempotent with one's own token, so an owner whose lease
Redis forgot (a restart that lost the last second) takes it back if nobody else did.

Leases are written with ``allow-oom`` scripts: a full Redis must still let the DataWriter
take its lease and drain it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from skybuffer.errors import BufferFull, LeaseHeld, LeaseLost, RedisUnavailable, persist_error

log = logging.getLogger(__name__)

# Redis errors that mean "not reachable right now" rather than "refused".
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

# The check every fenced script starts with. KEYS[LEASE] and ARGV[TOKEN] are named by the
# script that pastes it; on success the lease is renewed by the same step.
FENCE_LUA = """
local function fence(lease, token, ttl_ms)
  if redis.call('HGET', lease, 'token') ~= token then
    return false
  end
  redis.call('PEXPIRE', lease, ttl_ms)
  return true
end
"""

# KEYS: lease. ARGV: token, ttl_ms, pid, host, since, what, and the token of a dead
# owner whose lease may be broken ('' for none). Returns 1 (ours now), or the owner.
_ACQUIRE = """#!lua flags=allow-oom
local current = redis.call('HGET', KEYS[1], 'token')
if current and current ~= ARGV[1] then
  if current ~= ARGV[7] then return redis.call('HGETALL', KEYS[1]) end
  redis.call('DEL', KEYS[1])
  current = false
end
if current ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'pid', ARGV[3], 'host', ARGV[4],
             'since', ARGV[5], 'what', ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease. ARGV: token, ttl_ms. 1 if renewed, 0 if the lease is not ours.
_RENEW = (
    "#!lua flags=allow-oom\n"
    + FENCE_LUA
    + """
if fence(KEYS[1], ARGV[1], ARGV[2]) then return 1 end
return 0
"""
)

# KEYS: lease. ARGV: token.
_RELEASE = """#!lua flags=allow-oom
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Owner:
    """Who holds a lease, as the sentence naming it says."""

    pid: int
    host: str
    since: float
    what: str
    token: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.what} (pid {self.pid} on {self.host}, since {when})"

    @property
    def dead_here(self) -> bool:
        """True if the owner ran on this host and its process is gone."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _is_zombie(self.pid)


class Lease:
    """The lease of one role, held by this process while ``held``; its Heartbeat keeps it."""

    def __init__(
        self, client: redis.Redis, key: str, ttl_seconds: float, what: str, hint: str = ""
    ) -> None:
        self.client = client
        self.key = key
        self.hint = hint
        """What to do when it is held, for the refusal's sentence."""
        self.ttl_ms = max(1000, int(ttl_seconds * 1000))
        self.what = what
        self.token = secrets.token_hex(12)
        self.since = time.time()
        self.held = False
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._heartbeat = Heartbeat(self.renew, interval=self.ttl_ms / 4000)

    def try_acquire(self) -> Owner | None:
        """Take the lease if it is free, ours, or its owner died on this host; else the
        owner."""
        owner = self._try()
        if owner is not None and owner.dead_here:
            log.warning(
                "Taking over %s from %s: it is no longer running.", self.key, owner.describe()
            )
            owner = self._try(dead_token=owner.token)
        if owner is None:
            self.held = True
        return owner

    def acquire(
        self, wait: bool, stop: threading.Event | None = None, timeout: float | None = None
    ) -> None:
        """Take the lease, waiting for it if ``wait`` (at most ``timeout`` seconds); else
        raise LeaseHeld naming the owner. Starts the heartbeat."""
        announced = False
        stop = stop or threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            owner = self.try_acquire()
            if owner is None:
                self._heartbeat.start()
                return
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise LeaseHeld(owner, self.hint, self.key)
            if not announced:
                log.info("Waiting for %s: held by %s.", self.key, owner.describe())
                announced = True
            if stop.wait(min(1.0, self.ttl_ms / 4000)):
                raise LeaseHeld(owner, self.hint, self.key)

    def renew(self) -> bool:
        """Extend the lease; False (and ``held`` cleared) if it was not held without a
        break: another owner has it, or had it, or Redis forgot it. Work begun under
        the lease must then be abandoned: someone else may have done it meanwhile."""
        if not self.held:
            return False
        if int(redis_call(self._renew, keys=[self.key], args=[self.token, self.ttl_ms])):
            return True
        self.held = False
        log.error("Lost %s: this process stalled past its expiry (or Redis forgot it).", self.key)
        return False

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still ours without a break (renewing it)."""
        if not self.renew():
            raise LeaseLost(f"{self.what} lost its lease {self.key}")

    def reclaim(self) -> bool:
        """Take the lease again after losing it, if it is free now; False if another owner
        holds it. The caller starts its work over (re-reads what to do)."""
        if self.try_acquire() is not None:
            return False
        log.warning("Took %s back: it was free again.", self.key)
        self._heartbeat.start()
        return True

    def release(self) -> None:
        self._heartbeat.stop()
        if self.held:
            self.held = False
            try:
                self._release(keys=[self.key], args=[self.token])
            except redis.RedisError as exc:
                log.warning("Could not release %s (%s); it expires by itself.", self.key, exc)

    def _try(self, dead_token: str = "") -> Owner | None:
        host = socket.gethostname()
        args = [self.token, self.ttl_ms, os.getpid(), host, self.since, self.what, dead_token]
        reply = redis_call(self._acquire, keys=[self.key], args=args)
        return None if reply == 1 else _owner(_pairs(reply))


class Heartbeat:
    """Keeps a lease between its owner's fenced steps: a daemon thread calls ``renew``
    every ``interval`` seconds. It ends when stopped, or by itself at the first renewal
    that finds the lease taken; an unreachable or full Redis only skips a beat (the
    owner's next fenced step sees whether it still holds the lease)."""

    def __init__(self, renew: Callable[[], bool], interval: float) -> None:
        self._renew = renew
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Beat (again); a thread that is still beating is kept, not doubled."""
        self._stop.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._renew():
                    return
            except (RedisUnavailable, BufferFull):
                continue


def redis_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args)``, with Redis's "not reachable right now" errors as RedisUnavailable
    and its "cannot write its AOF" refusal (MISCONF) as BufferCannotPersist (the
    transient kinds: callers back off and retry)."""
    try:
        return func(*args, **kwargs)
    except CONNECTION_ERRORS as exc:
        raise RedisUnavailable(str(exc)) from exc
    except redis.ResponseError as exc:
        cannot_persist = persist_error(str(exc))
        if cannot_persist is not None:
            raise cannot_persist from None
        raise


def holder_of(client: redis.Redis, key: str) -> Owner | None:
    """Who holds the lease ``key`` now (None when free); for status."""
    return _owner(client.hgetall(key))


def _pairs(reply: list) -> dict:
    return {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}


def _owner(raw: dict) -> Owner | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if not fields.get("token"):
        return None
    return Owner(
        pid=int(fields.get("pid") or 0),
        host=fields.get("host", "?"),
        since=float(fields.get("since") or 0),
        what=fields.get("what", "?"),
        token=fields["token"],
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
