"""The processes `skybuffer run` brings up around the ingester, and takes down in reverse.

In order: the managed Redis (unless ``redis.url``), a local Prefect server (unless a
Prefect API is given), the monitoring stack (when its binaries are installed and
``stack.autostart``), and `skybuffer serve` (the scheduled DataWriter) as a child
process. Each is stopped by the handle or pid it was started with; a DataWriter run in
progress is allowed to finish first (it holds the writer lock while it runs).
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

from skybuffer.buffer.cluster import ClusterTopology
from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.sentinel import SentinelTopology
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.topology import connect, managed
from skybuffer.console import err_console
from skybuffer.errors import LeaseHeld
from skybuffer.pipeline.prefect_server import PrefectServer, prefect_env
from skybuffer.privilege import skybuffer_env
from skybuffer.processes import spawn, stop_process_group
from skybuffer.settings import Settings

log = logging.getLogger(__name__)

RUN_LOCK = "run.lock"


class Services(AbstractContextManager["Services"]):
    """Everything but the ingester; a context manager so a crash still tears it down.
    The steps follow ``close``: the starts in the order they run, then the stops."""

    def __init__(self, settings: Settings, *, stack: bool = True, writer: bool = True) -> None:
        self.settings = settings
        self.want_stack = stack and settings.stack.autostart
        self.want_writer = writer
        self.redis: ManagedRedis | SentinelTopology | ClusterTopology | None = None
        self.prefect: PrefectServer | None = None
        self.stack_started = False
        self.serve: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, str] = {}
        self.run_lock = RunLock(settings.data_dir)

    def __enter__(self) -> Services:
        self.settings.claim_ports()
        self.run_lock.acquire()
        try:
            self._start_redis()
            if self.want_writer:
                self._start_writer()
            if self.want_stack:
                self._start_stack()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def writer_alive(self) -> bool:
        return self.serve is None or self.serve.poll() is None

    def close(self) -> None:
        """Stop in reverse order; each step runs even when an earlier one failed."""
        for step in (self._stop_writer, self._stop_stack, self._stop_prefect, self._stop_redis):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                log.error("Shutdown step %s failed: %s", step.__name__, exc)
        self.run_lock.release()  # frees the data dir for the next `run`

    def _start_redis(self) -> None:
        s = self.settings
        if s.redis.url:
            self.urls["redis"] = "external (SKYBUFFER_REDIS__URL)"
            return
        if s.redis.sentinels:
            self.urls["redis"] = "external sentinels (redis.sentinels)"
            return
        server = managed(s.redis, s.redis_dir)
        if server.start():
            self.redis = server  # stopped at the end only because this run started it
        self.urls["redis"] = f"redis://{server.address} (data in {s.redis_dir})"

    def _api_url(self) -> str:
        given = self.settings.prefect.api_url or os.environ.get("PREFECT_API_URL")
        if given:
            self.urls["prefect"] = f"{given} (given)"
            return given
        self.prefect = PrefectServer(self.settings.prefect, self.settings.prefect_dir)
        err_console.print("Starting the Prefect server (the first start migrates its database)…")
        self.prefect.start()
        self.urls["prefect"] = self.prefect.ui_url
        return self.prefect.api_url

    def _start_writer(self) -> None:
        api_url = self._api_url()
        # The served flow and its flow-run subprocesses never post to Slack: no webhook.
        env = prefect_env(skybuffer_env(), self.settings.prefect_dir, api_url)
        env["SKYBUFFER_DATA_DIR"] = str(self.settings.data_dir)
        if self.settings.config is not None:
            env["SKYBUFFER_CONFIG"] = str(self.settings.config)
        with open(self.settings.prefect_dir / "serve.log", "ab") as log:
            self.serve = spawn(
                [sys.executable, "-m", "skybuffer", "serve"], cwd=None, log=log, env=env
            )
        port = self.settings.metrics.writer_port
        if port:
            self.urls["writer metrics"] = f"http://{self.settings.metrics.host}:{port}/metrics"
        self.urls["schedule"] = f"datawriter: {self.settings.writer.schedule}"

    def _start_stack(self) -> None:
        from skybuffer.observability.pages import pages_to_open
        from skybuffer.observability.stack import missing_binaries, stack_up

        missing = missing_binaries()
        if missing:
            log.warning("Monitoring stack not started: missing %s.", ", ".join(sorted(missing)))
            return
        self.urls.update(pages_to_open(stack_up(self.settings)))
        self.stack_started = True

    def _stop_writer(self) -> None:
        serve, self.serve = self.serve, None
        if serve is None or serve.poll() is not None:
            return
        self._wait_for_running_drain()
        stop_process_group(serve, timeout=30)

    def _wait_for_running_drain(self) -> None:
        """A DataWriter run holds the writer lease (of each partition): let it finish
        (within its budget)."""
        try:
            partitions = Partitions.of_settings(self.settings.redis)
            leases = [
                (connect(self.settings.redis, self.settings.redis_dir, k.prefix), k.writer_lease)
                for k in map(partitions.keys, range(partitions.count))
            ]
            deadline = time.monotonic() + self.settings.writer.budget_seconds
            announced = False
            while any(c.exists(k) for c, k in leases) and time.monotonic() < deadline:
                if not announced:
                    err_console.print("Waiting for the running DataWriter run to finish…")
                    announced = True
                time.sleep(0.5)
        except Exception as exc:  # noqa: BLE001 - Redis may already be gone
            log.warning("Could not check for a running DataWriter run: %s", exc)

    def _stop_stack(self) -> None:
        if self.stack_started:
            from skybuffer.observability.stack import stack_down

            stack_down(self.settings)
            self.stack_started = False

    def _stop_prefect(self) -> None:
        if self.prefect is not None:
            self.prefect.stop()
            self.prefect = None

    def _stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
            err_console.print("redis-server stopped (AOF fsync'd).")


class RunLock:
    """One `run` per data dir: an flock on {data_dir}/run.lock (the kernel frees it when
    the process dies), taken before anything starts, so a second `run` refuses without
    touching the first one's servers. The file names the holder for that refusal."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / RUN_LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise LeaseHeld naming the `run` that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LeaseHeld(
                holder,
                "stop that `skybuffer run` first (Ctrl-C), or give this one another --data-dir",
                key=f"the data dir {self.data_dir}",
            ) from None
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"skybuffer run (pid {os.getpid()}, since {since})".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
