"""processes.py on real child processes: a child that exited is never taken for a running
one (zombie or not), stopping escalates to SIGKILL only when SIGTERM is ignored, and a
process group goes down whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from skybuffer import processes

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "print('ignoring', flush=True); time.sleep(600)"
)
PARENT_OF_SLEEPER = (
    "import subprocess, sys, time;"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
    "print(child.pid, flush=True); time.sleep(600)"
)


def spawn(code: str, log: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", code]
    return processes.spawn(args, cwd=None, log=log, env=dict(os.environ), stderr=subprocess.DEVNULL)


def test_an_exited_child_is_not_alive_even_before_anyone_reaps_it() -> None:
    child = spawn("pass")
    assert processes.wait_gone(child.pid, timeout=60)
    assert not processes.alive(child.pid)  # reaped, not a zombie counted as running


def test_stop_pid_uses_sigkill_only_for_a_process_that_ignores_sigterm() -> None:
    polite = spawn("import time; time.sleep(600)")
    stubborn = spawn(IGNORES_TERM, log=subprocess.PIPE)
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ignoring\n"  # its handler is in place (not just alive)
    assert processes.stop_pid(polite.pid, timeout=30)
    assert polite.wait(timeout=30) == -15  # SIGTERM was enough
    assert processes.stop_pid(stubborn.pid, timeout=1)
    assert stubborn.wait(timeout=30) == -9


def test_a_process_group_is_stopped_with_its_children() -> None:
    parent = spawn(PARENT_OF_SLEEPER, log=subprocess.PIPE)
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    processes.stop_process_group(parent, timeout=30)
    assert parent.poll() is not None
    assert processes.wait_gone(grandchild, timeout=30)


def test_wait_until_gives_up_after_its_timeout() -> None:
    assert not processes.wait_until(lambda: False, timeout=0.2, interval=0.05)
    assert processes.wait_until(lambda: True, timeout=0)


def test_atomic_write_replaces_whole_and_fsync_takes_files_and_directories(tmp_path: Path) -> None:
    target = tmp_path / "targets.yml"
    processes.atomic_write(target, "old\n")
    processes.atomic_write(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.yml"]  # no temp left
    processes.fsync(target)
    processes.fsync(tmp_path)


def test_peak_rss_is_this_process_high_water_mark() -> None:
    before = processes.peak_rss_bytes()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert processes.peak_rss_bytes() >= before
    assert processes.peak_rss_bytes() >= 64 * 2**20
    del block
