"""The managed redis-server: start, wait until it serves, stop with SHUTDOWN.

Unless ``redis.url`` points elsewhere, skybuffer runs its own redis-server in
``{data_dir}/redis`` with the committed ``config/redis/redis.conf`` and the ACL users of
``config/redis/users.acl``, rendered with passwords generated on first start (files of
mode 0600 under ``{data_dir}/redis/secrets``) unless given by env. The server outlives
the command that started it (``skybuffer redis start``) and is found again by its pid
file; it is stopped by that pid's SHUTDOWN, which fsyncs the AOF.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from skybuffer import processes
from skybuffer.buffer.aof import AofLoad, AofWatch
from skybuffer.buffer.users import USERS, AclUsers, Credentials
from skybuffer.datadir import ensure_free, port_of
from skybuffer.errors import ConfigError, MissingBinaryError, RedisUnavailable, persist_error
from skybuffer.privilege import PRIVATE_UMASK, make_private, program_env, write_private
from skybuffer.settings import RedisSettings

log = logging.getLogger(__name__)


def no_retry() -> Retry:
    """redis-py retries failed commands by default, MULTI/EXEC included: a transaction
    whose reply was lost would be applied twice. skybuffer retries whole batches itself,
    checking the cursor first, so the client must never retry on its own."""
    return Retry(NoBackoff(), 0)


class ManagedRedis:
    """A redis-server process owned by one data dir."""

    def __init__(
        self,
        settings: RedisSettings,
        directory: Path,
        *,
        secrets_dir: Path | None = None,
        users: tuple[str, ...] = USERS,
    ) -> None:
        """``secrets_dir`` and ``users`` serve the nodes of a topology (buffer/sentinel.py):
        one set of passwords for all nodes, and the users replication and the sentinels
        log in as."""
        self.settings = settings
        self.directory = directory
        self.secrets_dir = secrets_dir or directory / "secrets"
        self.users = AclUsers(settings, self.secrets_dir, users)
        self.pidfile = directory / "redis.pid"
        self.logfile = directory / "redis.log"
        self.endpoint_file = directory / "endpoint"
        self.last_load: AofLoad | None = None
        """What this object's start loaded (a truncated AOF is reported from it)."""

    def credentials(self, user: str = "skybuffer") -> Credentials:
        """The password of ``user`` (buffer/users.py)."""
        return self.users.credentials(user)

    def render_acl(self) -> Path:
        """Write users.acl beside the server's data (buffer/users.py)."""
        return self.users.render_acl(self.settings.conf.parent / "users.acl", self.directory)

    @property
    def port(self) -> int:
        return port_of(self.settings.port, "redis")

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def client(self, user: str = "skybuffer", **kwargs: object) -> redis.Redis:
        creds = self.credentials(user)
        return redis.Redis(
            host=self.settings.host,
            port=self.port,
            username=creds.username,
            password=creds.password,
            socket_timeout=self.settings.socket_timeout_seconds,
            socket_connect_timeout=2,
            retry=no_retry(),
            **kwargs,  # type: ignore[arg-type]
        )

    def pid(self) -> int | None:
        """The pid of our running server, or None (a stale pid file is ignored)."""
        return processes.running_pid(self.pidfile)

    def is_serving(self) -> bool:
        """True when Redis answers; also while it cannot write its AOF, when it refuses
        even PING with MISCONF (it serves reads, and SHUTDOWN, all the same)."""
        try:
            return bool(self.client("admin").ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        except redis.AuthenticationError:
            return False
        except redis.ResponseError as exc:
            if persist_error(str(exc)) is not None:
                return True
            raise

    def start(self) -> bool:
        """Start the server unless it already serves; True when this call started it."""
        if self.pid() is None:
            # Nothing of ours runs: whatever listens on the port is another program (asked
            # for a PING, it might never answer, so it is not asked).
            data_dir = self.directory.parent
            ensure_free(self.settings.host, self.port, "redis", data_dir, grace_seconds=3.0)
        elif self.is_serving():
            return False
        self._refuse_a_second_server()
        binary = shutil.which("redis-server")
        if binary is None:
            raise MissingBinaryError("redis-server", "redis-server")
        if not self.settings.conf.exists():
            raise ConfigError(f"redis.conf not found at {self.settings.conf} (set redis.conf)")
        make_private(self.directory)  # the AOF and RDB hold every buffered event
        watch = AofWatch.before_start(self.directory, self.logfile)
        self._spawn(binary, self.render_acl())
        self.wait_until_serving(self.settings.start_timeout_seconds)
        self.last_load = watch.after_start()
        if self.last_load.truncated:
            log.warning(
                "%s; `skybuffer status` shows it until the next start.",
                self.last_load.describe(),
            )
        return True

    def _refuse_a_second_server(self) -> None:
        """Two servers on one data dir would interleave one AOF: never start a second."""
        pid = self.pid()
        if pid is not None:
            raise ConfigError(
                f"a redis-server of {self.directory} already runs (pid {pid}) at "
                f"{self.recorded_endpoint()}, not at {self.address}: "
                "set SKYBUFFER_REDIS__PORT to its port, or `skybuffer redis stop` it first"
            )

    def recorded_endpoint(self) -> str:
        """host:port the running server of this data dir was started with."""
        try:
            return self.endpoint_file.read_text().strip()
        except FileNotFoundError:
            return "an unknown port"

    def _spawn(self, binary: str, acl: Path) -> None:
        options = {
            "--port": str(self.port),
            "--bind": self.settings.host,
            "--dir": str(self.directory),
            "--aclfile": str(acl),
            "--pidfile": str(self.pidfile),
            "--logfile": str(self.logfile),
            "--daemonize": "no",
        }
        if self.settings.maxmemory:
            options["--maxmemory"] = self.settings.maxmemory
        args = [binary, str(self.settings.conf), *(w for pair in options.items() for w in pair)]
        # A new session: the server outlives this command and ignores its Ctrl-C;
        # skybuffer stops it with SHUTDOWN (AOF fsync'd) instead. umask 077: the AOF dir,
        # its manifest, base and incr files, rewrite temp files and RDB come out 0600/0700.
        # Python's ignored SIGXFSZ is kept (restore_signals=False): at a file size limit
        # (ulimit -f) Redis then gets EFBIG, reports MISCONF and retries like on a full
        # disk, instead of dying.
        proc = processes.spawn(
            args,
            cwd=self.directory,
            log=subprocess.DEVNULL,
            env=program_env(),
            stderr=subprocess.PIPE,
            umask=PRIVATE_UMASK,
            restore_signals=False,
        )
        write_private(self.endpoint_file, f"{self.address}\n")
        self._process = proc

    def _exited_at_start(self) -> str | None:
        proc = getattr(self, "_process", None)
        if proc is None or proc.poll() is None:
            return None
        err = (proc.stderr.read().decode(errors="replace") if proc.stderr else "").strip()
        return err or self._log_tail()

    def wait_until_serving(self, timeout: float) -> None:
        """Wait until Redis answers commands: the port opens before the AOF is loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_serving():
                return
            exited = self._exited_at_start()
            if exited is not None:
                raise ConfigError(f"redis-server exited at start: {exited}")
            time.sleep(0.05)
        raise RedisUnavailable(
            f"redis-server did not serve within {timeout:.0f}s on {self.address}; "
            f"see {self.logfile}: {self._log_tail()}"
        )

    def stop(self, timeout: float = 60.0) -> bool:
        """SHUTDOWN (the AOF is fsync'd first); True when a server was stopped."""
        pid = self.pid()
        serving = self.is_serving()
        if pid is None and not serving:
            return False
        if serving:
            self._shutdown()
        elif pid is not None and "redis-server" in psutil.Process(pid).name():
            # Started on another port (an earlier SKYBUFFER_REDIS__PORT): SIGTERM is
            # redis-server's own graceful shutdown, AOF fsync'd like SHUTDOWN.
            os.kill(pid, signal.SIGTERM)
        if pid is not None and not processes.wait_gone(pid, timeout):
            raise RedisUnavailable(f"redis-server (pid {pid}) did not exit within {timeout:.0f}s")
        return True

    def _shutdown(self) -> None:
        """SHUTDOWN; if Redis refuses it (an error it would stop on, such as an AOF it
        cannot fsync), SHUTDOWN FORCE: what Redis had fsync'd stays; what it could not
        write (INFO persistence ``aof_buffer_length``) is lost, as in a crash, and the
        pipeline re-reads it from the source (its cursor was in the same transactions)."""
        admin = self.client("admin")
        refused = ""
        for args in (("SHUTDOWN",), ("SHUTDOWN", "FORCE")):
            try:
                admin.execute_command(*args)
            except (redis.ConnectionError, redis.TimeoutError):
                return  # the connection closes as the server exits
            except redis.ResponseError as exc:
                refused = str(exc)
        raise RedisUnavailable(f"SHUTDOWN FORCE refused: {refused}; see {self.logfile}")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-3:])
        except FileNotFoundError:
            return "(no log)"
