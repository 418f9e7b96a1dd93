"""Leases: one owner per role, a refusal that names the owner, takeover after expiry or
at once from a dead owner on this host (real redis-server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from skybuffer.buffer.lease import Lease
from skybuffer.errors import LeaseHeld

KEY = "skybuffer:lease:test"


def test_a_second_owner_is_refused_with_a_sentence_naming_the_first(client: redis.Redis) -> None:
    first = Lease(client, KEY, 10, "the ingester of source replay")
    first.acquire(wait=False)
    second = Lease(client, KEY, 10, "another", hint="stop it first")
    try:
        with pytest.raises(LeaseHeld) as caught:
            second.acquire(wait=False)
        message = str(caught.value)
        assert "the ingester of source replay" in message
        assert f"pid {os.getpid()}" in message
        assert "stop it first" in message
    finally:
        first.release()
    second.acquire(wait=False)  # free once released
    second.release()


def test_a_waiting_owner_takes_over_when_the_lease_expires(client: redis.Redis) -> None:
    first = Lease(client, KEY, 1, "first")
    assert first.try_acquire() is None  # held without a heartbeat: it will expire
    second = Lease(client, KEY, 1, "second")
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)  # bounds a hang only
    timer.start()
    try:
        second.acquire(wait=True, stop=stop)
        assert second.held and not stop.is_set()
        assert not first.renew(), "the expired owner must find its lease gone"
    finally:
        timer.cancel()
        second.release()


def test_a_lease_whose_owner_died_on_this_host_is_taken_at_once(client: redis.Redis) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = {"token": "t", "pid": dead.pid, "host": socket.gethostname(), "what": "killed"}
    client.hset(KEY, mapping=owner)
    client.pexpire(KEY, 600_000)
    lease = Lease(client, KEY, 600, "successor")
    try:
        assert lease.try_acquire() is None
        assert client.hget(KEY, "token") == lease.token.encode()
    finally:
        lease.release()


def test_the_heartbeat_renews_the_lease_and_release_frees_it(client: redis.Redis) -> None:
    lease = Lease(client, KEY, 4, "beating")
    lease.acquire(wait=False)
    try:
        previous, renewed = client.pttl(KEY), False
        deadline = time.monotonic() + 60  # bounds a hang only
        while not renewed and time.monotonic() < deadline:
            time.sleep(0.05)
            current = client.pttl(KEY)
            renewed, previous = current > previous, current
        assert renewed, "the heartbeat never renewed the lease (its expiry only fell)"
    finally:
        lease.release()
    assert not client.exists(KEY)
