"""Files that hold buffered events (AOF, RDB, spool) are 0600 in 0700 directories, and a
data dir left readable by an older version is tightened when its owner starts."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from skybuffer.buffer.producer import Encoder
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.spool import Spool
from skybuffer.privilege import make_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _modes(root: Path) -> dict[str, int]:
    """Mode of every file and directory under ``root`` (symlinks left out)."""
    found = {".": _mode(root)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(root))] = _mode(path)
    return found


def _loose(modes: dict[str, int], root: Path) -> dict[str, str]:
    """The paths whose mode lets another account in, with that mode."""
    return {
        name: oct(mode)
        for name, mode in modes.items()
        if mode & 0o077 or mode != (0o700 if (root / name).is_dir() else 0o600)
    }


def _wait_until(what: str, check: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _rewrite_and_snapshot(admin: redis.Redis, aof_dir: Path) -> None:
    """BGREWRITEAOF (a new base file renamed from its temp file, a new incr file and
    manifest), then BGSAVE (dump.rdb renamed from temp-<pid>.rdb); wait for both."""
    bases_before = set(aof_dir.glob("*.base.rdb"))
    admin.bgrewriteaof()

    def rewritten() -> bool:
        info = admin.info("persistence")
        done = not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]
        return done and bool(set(aof_dir.glob("*.base.rdb")) - bases_before)

    _wait_until("BGREWRITEAOF", rewritten)
    assert admin.info("persistence")["aof_last_bgrewrite_status"] == "ok"
    admin.bgsave()
    _wait_until("BGSAVE", lambda: not admin.info("persistence")["rdb_bgsave_in_progress"])
    assert admin.info("persistence")["rdb_last_bgsave_status"] == "ok"


def test_the_aof_its_rewrites_and_the_rdb_are_private(redis_server: ManagedRedis) -> None:
    client = redis_server.client()
    for i in range(100):
        client.xadd("skybuffer:stream:posts", {"batch": os.urandom(512), "n": i})
    aof_dir = redis_server.directory / "appendonlydir"
    _rewrite_and_snapshot(redis_server.client("admin"), aof_dir)

    modes = _modes(redis_server.directory)
    names = set(modes)
    assert "dump.rdb" in names
    rewritten = {
        "appendonlydir/appendonly.aof.manifest",
        "appendonlydir/appendonly.aof.2.base.rdb",  # renamed from the rewrite's temp file
        "appendonlydir/appendonly.aof.2.incr.aof",
    }
    assert rewritten <= names, names
    assert _loose(modes, redis_server.directory) == {}


def test_a_redis_dir_left_readable_by_an_older_version_is_tightened_on_start(
    redis_server: ManagedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.client().xadd("skybuffer:stream:likes", {"batch": b"events"})
    assert redis_server.stop()
    for path in [redis_server.directory, *redis_server.directory.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)  # what 0.1 left behind

    with caplog.at_level(logging.WARNING, logger="skybuffer.privilege"):
        assert redis_server.start()
    assert _loose(_modes(redis_server.directory), redis_server.directory) == {}
    assert any("Tightened" in r.getMessage() for r in caplog.records), caplog.text
    assert redis_server.client().xlen("skybuffer:stream:likes") == 1


def test_the_spool_is_private_and_an_existing_loose_one_is_tightened(
    tmp_path: Path, golden_lines: list[bytes]
) -> None:
    fresh = tmp_path / "fresh"
    spool = Spool(fresh, "synthetic")
    spool.append([Encoder(max_event_bytes=10_000).encode(1, "1", golden_lines)])
    assert (_mode(fresh), _mode(spool.path)) == (0o700, 0o600)

    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    (old / "synthetic.spool").write_bytes(spool.path.read_bytes())
    os.chmod(old / "synthetic.spool", 0o644)
    reopened = Spool(old, "synthetic")
    assert (_mode(old), _mode(reopened.path)) == (0o700, 0o600)
    assert [b.seq for b in reopened.read()] == [1]


def test_tightening_leaves_symlinks_and_their_targets_alone(tmp_path: Path) -> None:
    outside = tmp_path / "lake-file"
    outside.write_text("readers may read this")
    os.chmod(outside, 0o644)
    data = tmp_path / "data"
    data.mkdir()
    (data / "link").symlink_to(outside)
    (data / "aof").write_text("events")
    os.chmod(data / "aof", 0o664)
    assert sorted(p.name for p in make_private(data)) == ["aof"]
    assert (_mode(data), _mode(data / "aof"), _mode(outside)) == (0o700, 0o600, 0o644)
