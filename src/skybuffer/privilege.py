"""Least privilege for what skybuffer leaves on disk and hands to the processes it starts.

Files that hold buffered events (Redis' AOF and RDB, the ingester's spool) or secrets
(passwords, the rendered ACL, the Slack webhook) are created 0600 in 0700 directories:
only the account that runs skybuffer can read them. A data dir left looser by an older
version is tightened when its owner starts (one log line says how many paths changed).
The lake is not private on purpose: its readers (DuckDB, Spark, a notebook) are often
another account, so its files keep the process umask.

Child processes get only the secrets they use. The Slack webhook reaches Alertmanager
through its ``api_url_file`` and no process's environment; third-party programs
(redis-server, Prometheus, Alertmanager, redis_exporter, the Prefect server) read no
``SKYBUFFER_`` variable at all, so they get none of them (passwords included).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from skybuffer.errors import ConfigError

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
"""The umask of a child that writes event data: its files 0600, its directories 0700."""
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
SKYBUFFER_ENV_PREFIX = "SKYBUFFER_"
SLACK_WEBHOOK_ENV = "SKYBUFFER_SLACK_WEBHOOK_URL"
_WEBHOOK_ENV_NAMES = frozenset({SLACK_WEBHOOK_ENV, "SKYBUFFER_STACK__SLACK_WEBHOOK_URL"})


# --- file modes -----------------------------------------------------------------------------
def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700, whatever it was."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)
    except PermissionError as exc:
        raise ConfigError(
            f"cannot make {path} private ({exc.strerror}): give a --data-dir "
            "(SKYBUFFER_DATA_DIR) of its own, owned by the account that runs skybuffer"
        ) from None
    return path


def make_private(root: Path) -> list[Path]:
    """Make ``root`` a 0700 directory whose files are 0600 and subdirectories 0700.

    Returns the paths that were looser (files written by an older version, or by a
    Redis started without skybuffer's umask) and logs one line when there were any.
    Symbolic links are neither followed nor changed: a link's mode means nothing and its
    target may not be ours.
    """
    private_dir(root)
    loosened = [path for path in _tree(root) if _tighten(path)]
    if loosened:
        log.warning(
            "Tightened %d paths under %s to owner-only (files 0600, directories 0700): "
            "they were readable by other accounts (written by an older version).",
            len(loosened),
            root,
        )
    return loosened


def _tree(root: Path) -> list[Path]:
    found: list[Path] = []
    for directory, dirnames, filenames in os.walk(root):
        found.extend(Path(directory) / name for name in (*dirnames, *filenames))
    return found


def _tighten(path: Path) -> bool:
    """chmod one path to its private mode; True when it was looser."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False  # removed meanwhile (a Redis rewrite's temp file)
    if stat.S_ISDIR(info.st_mode):
        wanted = PRIVATE_DIR
    elif stat.S_ISREG(info.st_mode):
        wanted = PRIVATE_FILE
    else:
        return False  # symlinks, sockets: nothing to tighten
    mode = stat.S_IMODE(info.st_mode)
    if mode & ~wanted == 0:
        return False
    try:
        os.chmod(path, mode & wanted)
    except PermissionError as exc:
        raise ConfigError(
            f"cannot make {path} private ({exc.strerror}): it belongs to another account; "
            "chown it to the account that runs skybuffer"
        ) from None
    return True


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created 0600: never readable by others,
    not even for an instant; an existing looser file is tightened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, PRIVATE_FILE)


# --- environments of child processes --------------------------------------------------------
def skybuffer_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a skybuffer child (`skybuffer serve` and its flow runs, bench
    and chaos workers): everything but the Slack webhook, which none of them posts to."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k.upper() not in _WEBHOOK_ENV_NAMES}


def program_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a third-party program: no ``SKYBUFFER_`` variable (they read
    none; their secrets come in files of mode 0600)."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not k.upper().startswith(SKYBUFFER_ENV_PREFIX)}
