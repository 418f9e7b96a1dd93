"""A throw-away redis-server for benchmarks and experiments, leaving nothing behind.

Started from the committed redis.conf (so figures describe the shipped profile) in a
temporary directory on a free loopback port, stopped by SHUTDOWN / its pid, and the
directory removed. With ``SKYBUFFER_REDIS__URL`` set the caller uses that server instead.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import redis

from skybuffer.buffer.server import ManagedRedis, free_port
from skybuffer.settings import RedisSettings


@contextmanager
def scratch_redis(
    base: RedisSettings, *, config: Mapping[str, str] | None = None, **overrides: object
) -> Iterator[ManagedRedis]:
    """A managed redis-server of the shipped profile on a free port, removed afterwards.

    ``config`` overrides redis.conf directives (e.g. ``{"appendfsync": "always"}``) in a
    copy of the conf, so they hold across a restart of the same server too.
    """
    directory = Path(tempfile.mkdtemp(prefix="skybuffer-scratch-"))
    if config:
        overrides["conf"] = conf_variant(base.conf, directory / "conf", config)
    settings = base.model_copy(update={"url": None, "port": free_port(), **overrides})
    server = ManagedRedis(settings, directory / "redis")
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop(timeout=30)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def conf_variant(conf: Path, directory: Path, config: Mapping[str, str]) -> Path:
    """A copy of ``conf`` (with the users.acl beside it) ending in ``config``'s directives:
    in redis.conf a later line wins, so the shipped file stays the single base."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [conf.read_text(), "# --- scratch overrides (later lines win) ---"]
    lines += [f"{name} {value}" for name, value in config.items()]
    target = directory / "redis.conf"
    target.write_text("\n".join(lines) + "\n")
    shutil.copyfile(conf.parent / "users.acl", directory / "users.acl")
    return target


def delete_keys(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN, never KEYS); returns how many went.

    The operations toolkit keeps its scratch keys under ``{prefix}ops:`` and calls this
    when it ends, so the pipeline's own keys are never touched."""
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    deleted, batch = 0, []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    return deleted
