"""The `skybuffer` command: parse, build settings, call one function, show the result.

Commands live in one module per group: cli/dataflow.py (the data flow), redis_server.py,
deadletter.py, lake.py, stack.py, ops.py (audit, capacity), chaos.py and bench.py; importing them
registers them on the application. cli/live.py and cli/tables.py are the terminal around
them.
"""

from __future__ import annotations

import errno
import logging
import sys

import redis

from skybuffer.cli import (  # noqa: F401
    bench,
    chaos,
    dataflow,
    deadletter,
    lake,
    ops,
    redis_server,
    stack,
)
from skybuffer.cli.apps import app
from skybuffer.errors import ConfigError, RedisUnavailable, SkybufferError, persist_error

__all__ = ["app", "main"]

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
"""A full disk, a quota, a file size limit, a read-only mount: the operator's to fix."""
ACCESS_ERRORS = (errno.EACCES, errno.EPERM, errno.ENOTDIR)
"""A path this user may not use: the operator's to choose another or fix."""


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except SkybufferError as exc:
        fail(exc)
    except redis.RedisError as exc:
        fail(from_redis(exc))
    except OSError as exc:
        fail(from_os(exc))


def from_os(exc: OSError) -> SkybufferError:
    """A full disk or a directory this user may not write, in one line; anything else
    is a bug and keeps its traceback."""
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in DISK_ERRORS:
        error = SkybufferError(f"cannot write{where} ({exc.strerror}): free space on its disk")
        error.exit_code = 4
        return error
    if exc.errno in ACCESS_ERRORS:
        return ConfigError(
            f"cannot use{where} ({exc.strerror}): give a --data-dir (SKYBUFFER_DATA_DIR) this "
            "user can write, or fix the owner and mode of that path"
        )
    raise exc


def fail(exc: SkybufferError) -> None:
    """One line naming the problem and the fix, and the error's own exit code."""
    from skybuffer.console import err_console

    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


def from_redis(exc: redis.RedisError) -> SkybufferError:
    """A Redis error no command mapped itself, in skybuffer's terms. Only Redis's words
    are kept: redis-py prefixes a pipeline's errors with its commands' arguments."""
    message = str(exc)
    cannot_persist = persist_error(message)
    if cannot_persist is not None:
        return cannot_persist
    if isinstance(exc, redis.AuthenticationError) or _refused_login(message):
        return RedisUnavailable(
            f"Redis refused skybuffer's login ({message[:120]}): set the password of ACL user "
            "'skybuffer' in SKYBUFFER_REDIS__PASSWORD, or the user and password in "
            "SKYBUFFER_REDIS__URL (redis://user:password@host:port/0)"
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return RedisUnavailable(
            f"cannot reach Redis ({message[:200]}): start it with `skybuffer redis start`, "
            "or point SKYBUFFER_REDIS__URL at yours"
        )
    said = message.rsplit("caused error: ", 1)[-1][:200]
    return SkybufferError(f"Redis refused a command: {said}")


def _refused_login(message: str) -> bool:
    """Redis's words for a client that did not log in, or not as a known user."""
    return any(word in message for word in ("NOAUTH", "WRONGPASS", "HELLO must be called"))
