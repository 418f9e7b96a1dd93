"""Child processes and durable files: the one way skybuffer starts, watches and stops
the programs it runs (redis-server, the stack, Prefect, the replay server), and makes a
directory entry durable.

A process is always stopped by the pid or handle it was started with, never by name. A
child started here is remembered, so that its exit status is collected (a zombie is not
a running process) whichever of our modules asks first.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    args: list[str], *, cwd: Path | None, log: IO[bytes] | int, env: dict[str, str], **popen: Any
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session: it outlives the command that started it and
    ignores its Ctrl-C; output goes to ``log``."""
    stderr = popen.pop("stderr", log)
    process = subprocess.Popen(
        args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=stderr,
        start_new_session=True,
        env=env,
        **popen,
    )
    _CHILDREN[process.pid] = process
    return process


def alive(pid: int) -> bool:
    """True while ``pid`` runs. A zombie has exited: a server started by an earlier
    command was re-parented, and not every init reaps promptly."""
    if reap(pid):
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def reap(pid: int) -> bool:
    """Collect the exit status of our own child; True once it has exited."""
    process = _CHILDREN.get(pid)
    if process is not None:
        if process.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited; False if it still runs after ``timeout``."""
    return wait_until(lambda: not alive(pid), timeout, interval=0.05)


def stop_pid(pid: int, timeout: float, kill_after: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL if it lingers past ``timeout``; True once it has exited."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_after)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_gone(pid, wait):
            return True
    return False


def stop_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a child started in its own session and its children, SIGKILL if they
    linger; by the handle it was started with."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it is true; False if ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def fsync(path: Path | str) -> None:
    """Make a file's data, or a directory's entries (a new or renamed file), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Write then rename: a reader (Prometheus' file watcher, a pid file's reader) never
    sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: that also counts the
    parent's memory when the process was started by vfork+exec, as subprocess does."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def running_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` while that process runs; None when the file is missing,
    unreadable, or stale (its process has exited)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None
