"""The run lock on its own: one `skybuffer run` per data dir, and the refusal names the
holder. (Starting and stopping the services is `skybuffer run` end to end, in
tests/e2e/test_run.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skybuffer.errors import LeaseHeld
from skybuffer.pipeline.services import RunLock


def test_a_second_run_lock_on_the_same_data_dir_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(LeaseHeld) as refused:
            RunLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in str(refused.value)
        assert "another --data-dir" in str(refused.value)
    finally:
        first.release()


def test_a_released_run_lock_can_be_taken_again(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    first.release()
    second = RunLock(tmp_path)
    second.acquire()
    second.release()
    assert (tmp_path / "run.lock").stat().st_mode & 0o077 == 0
