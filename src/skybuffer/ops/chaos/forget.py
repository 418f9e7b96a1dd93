"""`skybuffer chaos forget`: Redis forgets its last seconds mid-run; nothing is lost or doubled.

On a scratch data dir, the real pipeline runs: an ingester (with its lease) reads a file
of synthetic events, either straight from the file (``replay``) or through the local
Jetstream-protocol server (``jetstream``: cursor, websocket, the overlap window), and a
DataWriter drains every half second into a scratch lake. Mid-run the Redis server is
killed with SIGKILL and its AOF cut back to its size ``forget_seconds`` earlier — what a
host crash under ``appendfsync everysec`` leaves, or a failover to a replica that lagged
— and started again. The cut is taken only once the DataWriter has committed entries
written after it, so the lake already holds events that Redis then forgets: the hard
case. The run goes on until every source event is confirmed and drained.

Then every event is counted by identity: ``lost`` = source events not in the lake once,
``duplicated`` = extra copies; ``forgotten`` = events Redis had confirmed and lost (the
ingester's count), ``replayed`` = copies the lake dropped because it already held them,
``recovery_seconds`` = from the kill until the ingester was back where it had been.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from skybuffer import processes
from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.stream_ids import id_key
from skybuffer.constants import TYPES, Keys
from skybuffer.datadir import free_port
from skybuffer.ops.chaos.pipeline_run import SOURCES, PipelineRun, confirmed, landed
from skybuffer.ops.chaos.restart import incr_file
from skybuffer.ops.harness import conf_variant
from skybuffer.ops.report import Report, Table
from skybuffer.pipeline.ingest import Ingester
from skybuffer.pipeline.lanes import Lanes
from skybuffer.settings import Settings, load_settings

GATE_AT = 0.7
"""The source waits at this share of its events until Redis is back (see GatedSource)."""
DEADLINE_SECONDS = 600.0
"""Bounds a hang only: a run that has not finished by then is reported as failed."""


def run_chaos_forget(
    settings: Settings,
    events: int = 60_000,
    rate: float = 4_000.0,
    forget_seconds: float = 1.0,
    sources: tuple[str, ...] = SOURCES,
    restore: bool = False,
) -> Report:
    """One forgetting run per source, each on its own scratch data dir."""
    results = {s: forget_once(settings, s, events, rate, forget_seconds, restore) for s in sources}
    return _report(results, events, rate, forget_seconds, restore).write(settings.reports_dir)


def forget_once(
    base: Settings,
    source: str,
    events: int,
    rate: float,
    forget_seconds: float,
    restore: bool = False,
) -> dict[str, Any]:
    """One run. ``restore``: Redis comes back from a copy of its whole AOF directory
    taken ``forget_seconds`` before the kill (a restored older snapshot), instead of its
    AOF cut back to its size then (a host crash)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    with tempfile.TemporaryDirectory(prefix="skybuffer-forget-") as scratch:
        run = Run(base, Path(scratch), source, events, rate, forget_seconds, restore)
        return run.execute()


class Run(PipelineRun):
    """One pipeline on a scratch data dir, and Redis forgetting in the middle of it."""

    name = "forget"
    gate_at = GATE_AT
    deadline_seconds = DEADLINE_SECONDS

    def __init__(
        self,
        base: Settings,
        scratch: Path,
        source: str,
        events: int,
        rate: float,
        forget_seconds: float,
        restore: bool = False,
    ) -> None:
        super().__init__(scratch, source, events, rate, seed=23)
        self.forget_seconds, self.restore = forget_seconds, restore
        self.snapshot = scratch / "snapshot"
        conf = conf_variant(base.redis.conf, scratch / "conf", {"auto-aof-rewrite-percentage": "0"})
        self.settings = load_settings(
            data_dir=scratch / "var",
            redis={"port": free_port(), "conf": conf, "url": None},
            metrics={"ingest_port": 0, "writer_port": 0},
            writer={"batch_events": 5_000, "lease_seconds": 5},
            ingest={"batch_events": 500, "linger_seconds": 0.05, "lease_seconds": 5},
        )
        self.server = ManagedRedis(self.settings.redis, self.settings.redis_dir)

    def start_buffer(self) -> None:
        self.server.start()

    def stop_buffer(self) -> None:
        self.server.stop(timeout=30)

    def client(self, user: str = "skybuffer") -> redis.Redis:
        return self.server.client(user)

    def fault(self, ingester: Ingester | Lanes) -> dict[str, Any]:
        """Mark the AOF, let the DataWriter commit past the mark, kill, cut, restart."""
        admin = self.server.client("admin")
        aof_dir = self.server.directory / "appendonlydir"
        aof = incr_file(aof_dir)
        self.wait(lambda: ingester.stats.events >= self.events * 0.3, "30% ingested")
        mark_size, marked_at = aof.stat().st_size, time.monotonic()
        if self.restore:
            shutil.copytree(aof_dir, self.snapshot)  # the "older snapshot" (no fsync needed)
        marks = {t: _last_id(admin, self.settings, t) for t in TYPES}
        self.wait(lambda: self._committed_past(admin, marks), "the writer past the mark")
        self.wait(lambda: time.monotonic() - marked_at >= self.forget_seconds, "the window")
        ingested_at_kill = landed(ingester)
        pid = self.server.pid()
        assert pid is not None, "the scratch redis-server has no pid"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        processes.wait_gone(pid, timeout=10)
        cut = aof.stat().st_size - mark_size
        if self.restore:
            shutil.rmtree(aof_dir)
            shutil.copytree(self.snapshot, aof_dir)
        else:
            os.truncate(aof, mark_size)
        self.server.start()
        self.fault_over.set()
        self.wait(lambda: ingester.stats.rewinds > 0, "the ingester to notice")
        self.wait(lambda: confirmed(ingester) >= ingested_at_kill, "the ingester to recover")
        return {
            "forget_seconds": round(killed_at - marked_at, 2),
            "aof_bytes_cut": cut,
            "recovery_seconds": round(time.monotonic() - killed_at, 2),
        }

    def _committed_past(self, admin: Any, marks: dict[str, str]) -> bool:
        committed = admin.hgetall(Keys(self.settings.redis.prefix).writer_committed)
        done = {k.decode(): v.decode() for k, v in committed.items()}
        return any(
            mark != "0-0" and t in done and id_key(done[t]) > id_key(mark)
            for t, mark in marks.items()
        )


def _last_id(admin: Any, settings: Settings, type_: str) -> str:
    info = admin.xinfo_stream(Keys(settings.redis.prefix).stream(type_))
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else last


def _report(
    results: dict[str, dict[str, Any]],
    events: int,
    rate: float,
    forget_seconds: float,
    restore: bool,
) -> Report:
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 for r in results.values())
    rows = [{"source": s, **r} for s, r in results.items()]
    notes = [
        "lost and duplicated count source events by identity (did, collection, rkey, "
        "time_us) against the lake's rows; both must be 0.",
        "forgotten: events Redis had confirmed to the ingester and lost in the cut; the "
        "ingester rewound its source to the durable cursor and read them again.",
        "replayed: copies of events the lake already held (the DataWriter had committed "
        "them before Redis forgot) that the lake's replay guard dropped.",
        "recovery_seconds: from the SIGKILL until the durable cursor was back where it had "
        "been (restart, AOF load, rewind, re-read).",
    ]
    data = {
        "params": {
            "events": events,
            "rate": rate,
            "forget_seconds": forget_seconds,
            "how": "older AOF restored" if restore else "AOF cut back (host crash)",
        },
        "results": results,
        "ok": ok,
    }
    title = "skybuffer chaos forget: Redis forgets its last seconds mid-run"
    return Report(
        command="chaos-forget",
        title=title,
        data=data,
        tables=[Table("chaos forget", rows)],
        notes=notes,
        exit_code=0 if ok else 1,
    )
