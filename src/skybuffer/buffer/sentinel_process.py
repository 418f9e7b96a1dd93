"""One sentinel of a local topology (buffer/sentinel.py): its config (rendered with the
primary to watch, the quorum, its own password and the 'sentinel' ACL user it logs in to
the nodes as), its process (``redis-server sentinel.conf --sentinel``, found again by its
pid file, stopped by that pid), and what it says the primary is."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from skybuffer import processes
from skybuffer.datadir import ensure_free
from skybuffer.errors import RedisUnavailable
from skybuffer.privilege import PRIVATE_UMASK, program_env, write_private
from skybuffer.settings import RedisSettings

QUORUM = 2
"""Sentinels that must agree the primary is down (of three)."""


class SentinelProcess:
    """One sentinel: ``redis-server sentinel.conf --sentinel``, found again by its pid."""

    def __init__(self, directory: Path, host: str, port: int) -> None:
        self.directory, self.host, self.port = directory, host, port
        self.conf = directory / "sentinel.conf"
        self.pidfile = directory / "sentinel.pid"
        self.logfile = directory / "sentinel.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        """The pid of our running sentinel, or None (a stale pid file is ignored)."""
        return processes.running_pid(self.pidfile)

    def render(
        self,
        settings: RedisSettings,
        primary: tuple[str, int],
        secrets: Secrets,
        hostnames: bool = False,
    ) -> None:
        """Write sentinel.conf, once: the sentinel rewrites it with what it learns (its
        id, the current primary, its peers), which a later start must keep. With
        ``hostnames`` the primary may be a host name (containers: a service's name),
        which the sentinel resolves and announces as such."""
        if self.conf.exists():
            self._add_users(secrets.users)
            return
        name = settings.sentinel_master
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.directory}"',
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.logfile}"',
            f"requirepass {secrets.sentinels}",
            f"sentinel sentinel-pass {secrets.sentinels}",
            *(["sentinel resolve-hostnames yes", "sentinel announce-hostnames yes"] * hostnames),
            f"sentinel monitor {name} {primary[0]} {primary[1]} {QUORUM}",
            f"sentinel auth-user {name} sentinel",
            f"sentinel auth-pass {name} {secrets.sentinel}",
            f"sentinel down-after-milliseconds {name} {settings.sentinel_down_after_ms}",
            f"sentinel failover-timeout {name} {settings.sentinel_failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
            *secrets.users.splitlines(),
        ]
        write_private(self.conf, "\n".join(lines) + "\n")

    def _add_users(self, users: str) -> None:
        """A config of an older version lacks the ACL users (the exporter's): appended
        while the sentinel is stopped, kept by its own rewrites after."""
        text = self.conf.read_text()
        lines = [line for line in users.splitlines() if line.startswith("user ")]
        missing = [
            line
            for line in lines
            if not re.search(rf"^user {re.escape(line.split()[1])} ", text, re.MULTILINE)
        ]
        if missing and self.pid() is None:
            write_private(self.conf, text.rstrip("\n") + "\n" + "\n".join(missing) + "\n")

    def start(self, binary: str, data_dir: Path) -> None:
        if self.pid() is not None:
            return
        ensure_free(self.host, self.port, "redis", data_dir)
        processes.spawn(
            [binary, str(self.conf), "--sentinel"],
            cwd=self.directory,
            log=subprocess.DEVNULL,
            env=program_env(),
            umask=PRIVATE_UMASK,
        )

    def stop(self, timeout: float) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        if not processes.stop_pid(pid, timeout):
            raise RedisUnavailable(f"the sentinel of {self.directory} (pid {pid}) did not exit")
        return True

    def monitored_primary(self) -> tuple[str, int] | None:
        """The primary this sentinel's config names (its own rewrite keeps it current)."""
        try:
            text = self.conf.read_text()
        except FileNotFoundError:
            return None
        found = re.search(r"^sentinel monitor \S+ (\S+) (\d+) \d+$", text, re.MULTILINE)
        return (found.group(1), int(found.group(2))) if found else None


@dataclass(frozen=True)
class Secrets:
    """What a sentinel's config holds: its own password (clients and peers log in with
    it), the password of the 'sentinel' ACL user it logs in to the nodes as, and its own
    ACL users (hashed passwords)."""

    sentinels: str
    sentinel: str
    users: str = ""
    """ACL user lines of the sentinel itself (config/redis/sentinel.acl: the exporter's)."""
