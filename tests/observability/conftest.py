"""Fixtures for the monitoring tests: real binaries on free loopback ports, stopped by pid.

The helpers they use (config copies, the Slack stand-in, API calls) are in harness.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from skybuffer.buffer.server import ManagedRedis
from skybuffer.observability.stack import stack_down, stack_up
from skybuffer.settings import Settings, StackSettings

from .harness import FakeSlack, require, stop_redis


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A local HTTP server standing in for Slack's webhook: answers "ok", records posts."""
    received: FakeSlack

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.paths.append(self.path)
            received.posts.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    secret_path = "/services/T0SKYBUF/B0SKYBUF/s3cr3tw3bh00kt0ken"
    received = FakeSlack(url=f"http://127.0.0.1:{server.server_address[1]}{secret_path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture
def managed_redis() -> Iterator[Callable[[Settings], ManagedRedis]]:
    """Start the managed redis-server of a Settings (committed redis.conf and ACL)."""
    started: list[ManagedRedis] = []

    def start(settings: Settings) -> ManagedRedis:
        require("redis-server")
        server = ManagedRedis(settings.redis, settings.redis_dir)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        stop_redis(server)


@pytest.fixture
def run_stack() -> Iterator[Callable[[Settings, StackSettings], dict[str, str]]]:
    """stack_up for the test; stack_down (by pid) in teardown."""
    running: list[tuple[Settings, StackSettings]] = []

    def up(settings: Settings, stack: StackSettings) -> dict[str, str]:
        require("prometheus", "prometheus-alertmanager", "prometheus-redis-exporter")
        running.append((settings, stack))
        return stack_up(settings, stack)

    yield up
    for settings, stack in running:
        stack_down(settings, stack)
