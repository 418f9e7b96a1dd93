"""The `skybuffer` command: parse, build settings, call one function, show the result.

Commands live in cli/dataflow.py (the data flow) and cli/ops.py (the operator's tools);
importing them registers them on the application.
"""

from __future__ import annotations

import errno
import logging
import sys

import redis

from skybuffer.cli import dataflow, deadletter, ops  # noqa: F401 - registers the commands
from skybuffer.cli.apps import app
from skybuffer.errors import RedisUnavailable, SkybufferError, persist_error

__all__ = ["app", "main"]

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
"""A full disk, a quota, a file size limit, a read-only mount: the operator's to fix."""


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
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        fail(SkybufferError(f"cannot write{where} ({exc.strerror}): free space on its disk"))


def fail(exc: SkybufferError) -> None:
    """One line naming the problem and the fix, and the error's own exit code."""
    from skybuffer.console import err_console

    err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
    sys.exit(exc.exit_code)


def from_redis(exc: redis.RedisError) -> SkybufferError:
    """A Redis error no command mapped itself, in skybuffer's terms. Only Redis's words
    are kept: redis-py prefixes a pipeline's errors with its commands' arguments."""
    message = str(exc)
    cannot_persist = persist_error(message)
    if cannot_persist is not None:
        return cannot_persist
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return RedisUnavailable(
            f"cannot reach Redis ({message[:200]}): start it with `skybuffer redis start`, "
            "or point SKYBUFFER_REDIS_URL at yours"
        )
    said = message.rsplit("caused error: ", 1)[-1][:200]
    return SkybufferError(f"Redis refused a command: {said}")
