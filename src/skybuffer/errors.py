"""The error tree. Each error says whether retrying can help.

SkybufferError
├── ConfigError          (terminal)  bad settings or files; the message names the fix
│   └── PortInUse        (terminal)  another program holds a port; names the setting
├── MissingBinaryError   (terminal)  a system program is not installed; names the package
├── NoPipeline           (terminal)  no pipeline lives in the data dir a command reads
├── RedisUnavailable     (transient) cannot reach or talk to Redis
├── BufferFull           (transient) Redis refuses writes (OOM / high-water mark)
│   └── BufferCannotPersist (transient) Redis cannot write its AOF (disk full): MISCONF
├── CodecError           (terminal)  an entry cannot be decoded
├── LakeWriteError       (transient) a Parquet file could not be made durable
├── LeaseHeld            (terminal)  another process owns the role; names it
├── LeaseLost            (terminal)  this process's lease passed to another (fenced)
├── BufferForgot         (transient) Redis came back without writes this process made
├── QueryError           (terminal)  the SQL given to `skybuffer query` failed
├── DrainFailed          (transient) a type's scheduled drain failed (the task retries)
└── RunOverBudget        (terminal)  a scheduled run's budget was spent before a type's turn
"""

from __future__ import annotations

EXIT_CODES = {
    0: "done",
    1: "a check found a problem (audit FAIL, a type that failed to write, Redis not running)",
    2: "usage or configuration: a bad option, setting or file, a port taken, a missing program",
    3: "unavailable: Redis cannot be reached or refuses, no pipeline in the data dir, "
    "another process holds the role",
    4: "a disk is full or not writable (Redis's AOF, the lake, the spool)",
    5: "data: an entry or file that cannot be read as written",
}
"""What every command's exit code means (printed by `skybuffer --help`)."""


class SkybufferError(Exception):
    """Base of every error skybuffer raises on purpose."""

    retryable: bool = False
    exit_code: int = 2
    """What the CLI exits with when this error ends a command (EXIT_CODES)."""


class ConfigError(SkybufferError):
    """Settings or config files are wrong; the message says how to fix them."""


class PortInUse(ConfigError):
    """A port of this data dir (set or recorded) is held by another program."""


class NoPipeline(SkybufferError):
    """A read-only command was pointed at a data dir where no pipeline has started."""

    exit_code = 3


class MissingBinaryError(SkybufferError):
    """A required system program is missing; the message names the Debian package."""

    def __init__(self, binary: str, package: str) -> None:
        super().__init__(
            f"'{binary}' was not found on PATH: install the Debian/Ubuntu package "
            f"'{package}' (sudo apt-get install {package}), or run `make run`, which does."
        )
        self.binary = binary
        self.package = package


class RedisUnavailable(SkybufferError):
    """Redis cannot be reached or answered with a connection error."""

    retryable = True
    exit_code = 3


class BufferFull(SkybufferError):
    """Redis is at its memory limit or past the high-water mark: back off and retry."""

    retryable = True
    exit_code = 3


class BufferCannotPersist(BufferFull):
    """Redis cannot write its AOF (a full disk, a file size limit): it refuses every write
    and PING with MISCONF until a write succeeds again, which it retries every second by
    itself. Nothing it had made durable is lost; the pipeline waits and goes on."""

    exit_code = 4

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"Redis cannot write its AOF ({reason}): free space on the disk of Redis's dir "
            "(`skybuffer redis status` shows it); Redis retries by itself every second and "
            "the pipeline goes on when it can"
        )
        self.reason = reason


def persist_error(message: str) -> BufferCannotPersist | None:
    """The error for a Redis reply that says it cannot persist (MISCONF), else None.

    Only Redis's own words after ``MISCONF`` are kept: redis-py prefixes errors of a
    pipeline with the command and its arguments, which are event bytes, and a script
    error ends with the script's name; neither may reach a log line.
    """
    if "MISCONF" not in message:
        return None
    said = message.split("MISCONF", 1)[1].split(" script:", 1)[0].strip()
    reason = said.removeprefix("Errors writing to the AOF file:").strip().rstrip(".")
    return BufferCannotPersist(reason[:120] or "MISCONF")


class CodecError(SkybufferError):
    """A stream entry cannot be decoded by any known codec version."""

    exit_code = 5


class LakeWriteError(SkybufferError):
    """A lake file could not be written durably; nothing of its batch was acknowledged."""

    retryable = True
    exit_code = 4


class LeaseHeld(SkybufferError):
    """Another process owns the role (an ingester of this source, the DataWriter)."""

    exit_code = 3

    def __init__(self, owner: object, hint: str = "", key: str = "the lease") -> None:
        describe = getattr(owner, "describe", None)
        who = describe() if callable(describe) else str(owner)
        super().__init__(f"{key} is held by {who}" + (f"; {hint}" if hint else ""))
        self.owner = owner


class LeaseLost(SkybufferError):
    """This process's lease expired and another owner took it: it must stop committing."""

    exit_code = 3


class BufferForgot(SkybufferError):
    """Redis no longer holds writes it had confirmed (a restart that lost its last
    second under appendfsync everysec, a failover to a lagging replica, a restored
    snapshot). The source is rewound to the durable checkpoint."""

    retryable = True
    exit_code = 5

    def __init__(self, message: str, durable: object = None) -> None:
        super().__init__(message)
        self.durable = durable


class QueryError(SkybufferError):
    """The SQL given to `skybuffer query` failed; the message is DuckDB's."""


class DrainFailed(SkybufferError):
    """A type's drain failed; the task retries while the run's budget allows."""

    retryable = True


class RunOverBudget(SkybufferError):
    """The run's deadline came before this task could start; retrying cannot help."""
