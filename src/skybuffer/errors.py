"""The error tree. Each error says whether retrying can help.

SkybufferError
├── ConfigError          (terminal)  bad settings or files; the message names the fix
├── MissingBinaryError   (terminal)  a system program is not installed; names the package
├── RedisUnavailable     (transient) cannot reach or talk to Redis
├── BufferFull           (transient) Redis refuses writes (OOM / high-water mark)
├── CodecError           (terminal)  an entry cannot be decoded
├── LakeWriteError       (transient) a Parquet file could not be made durable
├── LeaseHeld            (terminal)  another process owns the role; names it
├── LeaseLost            (terminal)  this process's lease passed to another (fenced)
└── BufferForgot         (transient) Redis came back without writes this process made
"""

from __future__ import annotations


class SkybufferError(Exception):
    """Base of every error skybuffer raises on purpose."""

    retryable: bool = False


class ConfigError(SkybufferError):
    """Settings or config files are wrong; the message says how to fix them."""


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


class BufferFull(SkybufferError):
    """Redis is at its memory limit or past the high-water mark: back off and retry."""

    retryable = True


class CodecError(SkybufferError):
    """A stream entry cannot be decoded by any known codec version."""


class LakeWriteError(SkybufferError):
    """A lake file could not be written durably; nothing of its batch was acknowledged."""

    retryable = True


class LeaseHeld(SkybufferError):
    """Another process owns the role (an ingester of this source, the DataWriter)."""

    def __init__(self, owner: object, hint: str = "", key: str = "the lease") -> None:
        describe = getattr(owner, "describe", None)
        who = describe() if callable(describe) else str(owner)
        super().__init__(f"{key} is held by {who}" + (f"; {hint}" if hint else ""))
        self.owner = owner


class LeaseLost(SkybufferError):
    """This process's lease expired and another owner took it: it must stop committing."""


class BufferForgot(SkybufferError):
    """Redis no longer holds writes it had confirmed (a restart that lost its last
    second under appendfsync everysec, a failover to a lagging replica, a restored
    snapshot). The source is rewound to the durable checkpoint."""

    retryable = True

    def __init__(self, message: str, durable: object = None) -> None:
        super().__init__(message)
        self.durable = durable
