"""The managed Redis's append-only file: is it being written, and what did the last start
load from it.

Two things an operator must hear about, and Redis only says in its own log or INFO:

- **It cannot write its AOF** (a full disk): ``aof_last_write_status:err``. Redis then
  refuses writes and PING with MISCONF, keeps what it could not write in memory
  (``aof_buffer_length``) and retries every second; once a write succeeds it logs
  "AOF write error looks solved" and takes writes again by itself.
- **It loaded a truncated AOF** (``aof-load-truncated yes``, after a crash mid-write):
  Redis 7 logs ``!!! Warning: short read while loading the AOF file <file>!!!``,
  ``!!! Truncating the AOF <file> at offset <n> !!!`` and ``AOF <file> loaded anyway
  because aof-load-truncated is enabled``, then starts. Only the incomplete last write is
  cut (one MULTI/EXEC transaction, i.e. one batch, or one command), so what it dropped is
  exactly the bytes past that offset; the sizes taken before the start give their count.
  Each start records what it loaded in ``{redis_dir}/aof-load.json`` for ``status``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from skybuffer.privilege import write_private

RECORD = "aof-load.json"
AOF_DIR = "appendonlydir"
_TRUNCATING = re.compile(r"!!! Truncating the AOF (\S+) at offset (\d+) !!!")


@dataclass
class AofLoad:
    """What the last start of the managed Redis loaded: truncated or whole."""

    started_at: float = 0.0
    truncated: bool = False
    file: str = ""
    kept_bytes: int = 0
    dropped_bytes: int = 0

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return (
            f"Redis loaded a truncated AOF at its start on {when}: it dropped the incomplete "
            f"last write (one transaction or command, {self.dropped_bytes:,} bytes) of "
            f"{self.file}, kept {self.kept_bytes:,} bytes. The pipeline's cursors were in "
            "the same transactions, so the source re-reads whatever was dropped"
        )


@dataclass
class AofWatch:
    """Taken just before a start: the AOF files' sizes and where the log ends."""

    directory: Path
    logfile: Path
    sizes: dict[str, int] = field(default_factory=dict)
    log_offset: int = 0
    started_at: float = field(default_factory=time.time)

    @classmethod
    def before_start(cls, directory: Path, logfile: Path) -> AofWatch:
        aof_dir = directory / AOF_DIR
        sizes = (
            {p.name: p.stat().st_size for p in aof_dir.glob("*.aof")} if aof_dir.exists() else {}
        )
        offset = logfile.stat().st_size if logfile.exists() else 0
        return cls(directory, logfile, sizes, offset)

    def after_start(self) -> AofLoad:
        """Read what this start logged, and record it (replacing the last start's)."""
        load = AofLoad(started_at=self.started_at)
        found = _TRUNCATING.search(self._new_log())
        if found:
            name, offset = found.group(1), int(found.group(2))
            load.truncated, load.file, load.kept_bytes = True, name, offset
            load.dropped_bytes = max(0, self.sizes.get(name, offset) - offset)
        _write_record(self.directory / RECORD, load)
        return load

    def _new_log(self) -> str:
        try:
            with open(self.logfile, "rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def last_load(directory: Path) -> AofLoad | None:
    """The record of the managed Redis's last start, if any."""
    try:
        raw = json.loads((directory / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return AofLoad(**{k: v for k, v in raw.items() if k in AofLoad.__dataclass_fields__})


def _write_record(path: Path, load: AofLoad) -> None:
    tmp = path.with_suffix(".tmp")
    write_private(tmp, json.dumps(asdict(load)) + "\n")  # names the AOF files: the dir's mode
    tmp.replace(path)


@dataclass(frozen=True)
class AofHealth:
    """INFO persistence, as far as the operator needs it."""

    writing: bool
    """False while Redis cannot write its AOF (and refuses writes with MISCONF)."""
    unwritten_bytes: int
    """What Redis holds that is not in the AOF yet (lost if it is stopped now)."""

    def as_dict(self) -> dict[str, Any]:
        return {"aof_writing": self.writing, "aof_unwritten_bytes": self.unwritten_bytes}


def aof_health(client: redis.Redis) -> AofHealth | None:
    """Is Redis writing its AOF; None when the AOF is off or the user may not ask."""
    try:
        info = client.info("persistence")
    except redis.RedisError:
        return None
    if not int(info.get("aof_enabled", 0)):
        return None
    return AofHealth(
        info.get("aof_last_write_status", "ok") == "ok", int(info.get("aof_buffer_length", 0))
    )
