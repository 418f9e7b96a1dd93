"""`skybuffer chaos restart`: what a crash of Redis loses, measured, for both fsync modes.

On a throw-away redis-server of the shipped profile (once with ``appendfsync everysec``,
once with ``always``), skybuffer's Producer writes paced batches (one MULTI/EXEC each,
exactly as ingest does) while a consumer group reads and acknowledges part of them.
Then the server is killed with SIGKILL in the middle of the writes, and three things are
measured:

1. **SIGKILL + restart** (real): acknowledged vs recovered events, AOF load time, and
   whether the consumer group (pending entries, last-delivered ID) survived. A killed
   *process* loses nothing the kernel already has: write(2) put it in the page cache.
2. **Host crash, simulated**: a power cut also loses what was written but not yet
   fsync'd. With everysec Redis fsyncs once a second, so at least the AOF as it stood 1 s
   before the crash is on disk; with always, the reply is sent only after the fsync, so
   everything acknowledged is. The copy of the AOF is truncated to its size at the last
   acknowledgement at or before (kill - 1 s) for everysec, (kill) for always, and loaded.
   This is a model of the documented fsync contract, not a real power cut: see
   docs/OPERATIONS.md.
3. **Torn tail**: the last bytes of the AOF are cut mid-transaction. With
   ``aof-load-truncated yes`` (shipped) Redis drops the torn transaction and starts; with
   ``no`` it refuses to start until ``redis-check-aof --fix``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from skybuffer import processes
from skybuffer.buffer.codec import Decoder
from skybuffer.buffer.consumer import StreamConsumer
from skybuffer.buffer.producer import Encoder, Producer
from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES, WRITER_GROUP, Keys
from skybuffer.datadir import free_port
from skybuffer.errors import BufferFull, RedisUnavailable
from skybuffer.ops.harness import START_US, scratch_redis, stream_entries
from skybuffer.ops.report import Report, Table
from skybuffer.privilege import PRIVATE_UMASK, program_env
from skybuffer.settings import RedisSettings, Settings
from skybuffer.sources.synthetic import SyntheticSource

BATCH_EVENTS = 500
EVERYSEC_WINDOW = 1.0  # seconds between two everysec fsyncs
TORN_BYTES = 20  # cuts into the last transaction's final command
FSYNC_MODES = ("everysec", "always")
LOADED = re.compile(r"DB loaded from append only file: ([\d.]+) seconds")


class Writer(threading.Thread):
    """Paced batches through skybuffer's Producer until Redis goes away; every
    acknowledgement is recorded as (monotonic time, events acked so far, AOF incr size)."""

    def __init__(self, client: redis.Redis, keys: Keys, rate: float, incr: Path, seed: int):
        super().__init__(name="ops-restart-writer", daemon=True)
        self.producer = Producer(client, keys, "restart")
        self.source = SyntheticSource(seed, rate=rate, start_us=START_US)
        self.encoder, self.incr = Encoder(10**6), incr
        self.acks: list[tuple[float, int, int]] = []
        self.acked = 0

    def run(self) -> None:
        for seq, batch in enumerate(self.source.batches(BATCH_EVENTS, 0.02), 1):
            encoded = self.encoder.encode(seq, batch.position, batch.events)
            try:
                self.producer.write(encoded)
            except (RedisUnavailable, BufferFull):
                break
            self.acked += encoded.events
            self.acks.append((time.monotonic(), self.acked, self.incr.stat().st_size))
        self.source.close()


def run_chaos_restart(settings: Settings, events: int = 200_000, rate: float = 20_000) -> Report:
    """Both fsync modes; each on its own scratch server, removed afterwards."""
    modes = {mode: crash_and_recover(settings, mode, events, rate) for mode in FSYNC_MODES}
    return _report(modes, events, rate).write(settings.reports_dir)


def crash_and_recover(settings: Settings, fsync: str, events: int, rate: float) -> dict[str, Any]:
    config = {"appendfsync": fsync, "auto-aof-rewrite-percentage": "0"}
    keys = Keys(Keys(settings.redis.prefix).ops_prefix + "restart:")
    work = Path(tempfile.mkdtemp(prefix="skybuffer-restart-"))
    try:
        with scratch_redis(settings.redis, config=config) as server:
            aof_dir = server.directory / "appendonlydir"
            writer = Writer(server.client(), keys, rate, incr_file(aof_dir), seed=3)
            writer.start()
            groups, killed_at = _load_and_kill(server, keys, writer, events)
            for copy in ("host-crash", "torn-tail"):
                shutil.copytree(aof_dir, work / copy / "appendonlydir")
            result = _restart(server, keys, writer, groups)
            result["host_crash"] = simulate_host_crash(
                server.settings, work / "host-crash", writer, killed_at, fsync, keys
            )
            if fsync == "everysec":
                result["torn_tail"] = torn_tail(server.settings, work / "torn-tail", writer, keys)
            return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_and_kill(
    server: ManagedRedis, keys: Keys, writer: Writer, events: int
) -> tuple[dict[str, Any], float]:
    """Consume part of the stream at 30%, then SIGKILL once ``events`` are acknowledged
    and the consumer's work is at least two fsync periods old."""
    _wait_for(lambda: writer.acked >= events * 0.3, writer)
    groups = consume_some(server.client("admin"), keys)
    consumed_at = time.monotonic()
    _wait_for(lambda: writer.acked >= events and time.monotonic() - consumed_at >= 2.0, writer)
    pid = server.pid()
    assert pid is not None, "the scratch redis-server has no pid"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    processes.wait_gone(pid, timeout=60)
    writer.join(timeout=30)
    return groups, killed_at


def _wait_for(condition: Any, writer: Writer, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not writer.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the writer stopped or stalled at {writer.acked:,} events")
        time.sleep(0.01)


def consume_some(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Read some entries of every type in the writer's group and acknowledge half of
    them, so the group has a last-delivered ID and pending entries to survive."""
    consumer = StreamConsumer(client, keys, "ops-restart", read_count=10)
    for type_ in TYPES:
        batch = consumer.read_batch(type_, 2 * BATCH_EVENTS)
        ids = batch.ids[: len(batch.ids) // 2]
        if ids:
            client.xack(keys.stream(type_), WRITER_GROUP, *ids)
    return group_state(client, keys)


def group_state(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    state = {}
    for type_ in TYPES:
        try:
            groups = client.xinfo_groups(keys.stream(type_))
        except redis.ResponseError:
            groups = []
        state[type_] = [_group(g) for g in groups]
    return state


def _group(info: dict[str, Any]) -> dict[str, Any]:
    """What must survive a restart of one consumer group: its name, pending, position."""
    name, last = _text(info["name"]), _text(info["last-delivered-id"])
    return {"name": name, "pending": int(info["pending"]), "last_delivered": last}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def count_events(client: redis.Redis, keys: Keys) -> int:
    """Events in the streams, decoded (a recovered entry must decode to count)."""
    decoder, total = Decoder(), 0
    for type_ in TYPES:
        for _id, fields in stream_entries(client, keys.stream(type_), page=50):
            total += len(decoder.decode(fields))
    return total


def incr_file(aof_dir: Path) -> Path:
    """The current incr file of a Redis 7 multi-part AOF, from its manifest."""
    manifest = next(aof_dir.glob("*.manifest"))
    lines = [ln.split() for ln in manifest.read_text().splitlines() if " type i" in ln]
    return aof_dir / lines[-1][1]


def _restart(
    server: ManagedRedis, keys: Keys, writer: Writer, groups: dict[str, Any]
) -> dict[str, Any]:
    began = time.monotonic()
    server.start()
    wall = time.monotonic() - began
    client = server.client("admin")
    recovered = count_events(client, keys)
    after = group_state(client, keys)
    return {
        "acknowledged": writer.acked,
        "recovered": recovered,
        "lost": max(0, writer.acked - recovered),
        "recovered_unacknowledged": max(0, recovered - writer.acked),
        "aof_load_seconds": _load_seconds(server.logfile),
        "restart_wall_seconds": round(wall, 3),
        "aof_bytes": sum(p.stat().st_size for p in (server.directory / "appendonlydir").iterdir()),
        "group_state_survived": after == groups,
        "groups": groups,
    }


def _load_seconds(logfile: Path) -> float | None:
    found = LOADED.findall(logfile.read_text(errors="replace")) if logfile.exists() else []
    return float(found[-1]) if found else None


def _start_copy(base: RedisSettings, root: Path) -> ManagedRedis:
    server = ManagedRedis(base.model_copy(update={"port": free_port()}), root)
    server.start()
    return server


def _recovered_on_copy(base: RedisSettings, root: Path, keys: Keys) -> tuple[int, str]:
    """Start a server on a copied AOF, count its events, stop it; (events, log text)."""
    server = _start_copy(base, root)
    try:
        return count_events(server.client("admin"), keys), server.logfile.read_text()
    finally:
        server.stop(timeout=30)


def simulate_host_crash(
    base: RedisSettings, root: Path, writer: Writer, killed_at: float, fsync: str, keys: Keys
) -> dict[str, Any]:
    """Cut the AOF copy to what the fsync policy guarantees was on disk, and load it."""
    cutoff = killed_at - (EVERYSEC_WINDOW if fsync == "everysec" else 0.0)
    durable = [a for a in writer.acks if a[0] <= cutoff]
    size = durable[-1][2] if durable else 0
    os.truncate(incr_file(root / "appendonlydir"), size)
    recovered, log = _recovered_on_copy(base, root, keys)
    lost = max(0, writer.acked - recovered)
    return {
        "model": f"AOF cut to its size at the last ack <= kill - {killed_at - cutoff:.1f} s",
        "acknowledged": writer.acked,
        "recovered": recovered,
        "lost": lost,
        "window_seconds": round(_window(writer, recovered), 3),
        "loaded_truncated": "loaded anyway because aof-load-truncated" in log,
    }


def _window(writer: Writer, recovered: int) -> float:
    """Seconds of acknowledged writes that were lost: last ack - last recovered ack."""
    if recovered >= writer.acked or not writer.acks:
        return 0.0
    kept = [t for t, acked, _ in writer.acks if acked <= recovered]
    first = kept[-1] if kept else writer.acks[0][0]
    return writer.acks[-1][0] - first


def torn_tail(base: RedisSettings, root: Path, writer: Writer, keys: Keys) -> dict[str, Any]:
    """Cut TORN_BYTES off the AOF: loads with aof-load-truncated yes, refuses with no."""
    incr = incr_file(root / "appendonlydir")
    os.truncate(incr, max(0, incr.stat().st_size - TORN_BYTES))
    refused, reason = _refuses_without_load_truncated(base.conf, root)
    recovered, log = _recovered_on_copy(base, root, keys)
    return {
        "bytes_cut": TORN_BYTES,
        "acknowledged": writer.acked,
        "recovered_with_load_truncated_yes": recovered,
        "dropped_events": max(0, writer.acked - recovered),
        "started_with_load_truncated_yes": True,
        "loaded_truncated_warning": "loaded anyway because aof-load-truncated" in log,
        "refused_with_load_truncated_no": refused,
        "refusal_log": reason,
        "fix": "redis-check-aof --fix <appendonlydir>/<manifest>, then start",
    }


def _refuses_without_load_truncated(conf: Path, root: Path) -> tuple[bool, str]:
    """Start redis-server with aof-load-truncated no on the torn copy: does it exit?"""
    binary = shutil.which("redis-server") or "redis-server"
    log = root / "refuse.log"
    where = ["--port", str(free_port()), "--bind", "127.0.0.1", "--dir", str(root)]
    how = ["--daemonize", "no", "--logfile", str(log), "--aof-load-truncated", "no"]
    args = [binary, str(conf), *where, *how]
    proc = processes.spawn(
        args, cwd=None, log=subprocess.DEVNULL, env=program_env(), umask=PRIVATE_UMASK
    )
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()  # it started after all: stop the process we spawned
        proc.wait()
        return False, "started"
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "#" in ln]
    return True, (lines[-1].split("# ", 1)[-1] if lines else f"exit code {proc.returncode}")


def _report(modes: dict[str, dict[str, Any]], events: int, rate: float) -> Report:
    rows = [_mode_row(mode, r) for mode, r in modes.items()]
    torn_rows = _torn_rows(modes["everysec"]["torn_tail"])
    notes = [
        f"Writes: {rate:,.0f} ev/s in {BATCH_EVENTS}-event MULTI/EXEC batches; SIGKILL after "
        f">= {events:,} events were acknowledged, in the middle of the writes.",
        "SIGKILL of the redis-server process loses nothing: every acknowledged write was "
        "already in the kernel's page cache. The everysec window needs a host crash.",
        "Host crash (simulated): the AOF copy is cut to its size at the last acknowledgement "
        "1 s before the kill (everysec fsyncs every second) or at the kill (always: the "
        "reply follows the fsync), then loaded. It models the documented contract; a real "
        "power cut can lose up to ~2 s under everysec when fsync is delayed.",
        f"Torn tail: {TORN_BYTES} bytes cut from the AOF end, inside the last transaction. "
        "Redis drops the incomplete MULTI/EXEC as a whole: no half batch is ever loaded.",
    ]
    data = {"events": events, "rate": rate, "batch_events": BATCH_EVENTS, "modes": modes}
    ok = all(r["lost"] == 0 and r["group_state_survived"] for r in modes.values())
    ok = ok and modes["always"]["host_crash"]["lost"] == 0
    return Report(
        command="chaos-restart",
        title="skybuffer chaos restart: what a Redis crash loses",
        data=data,
        tables=[Table("chaos restart", rows), Table("torn AOF tail", torn_rows)],
        notes=notes,
        exit_code=0 if ok else 1,
    )


def _mode_row(mode: str, r: dict[str, Any]) -> dict[str, Any]:
    """One fsync mode's line: what a SIGKILL and a (simulated) host crash lost."""
    crash = r["host_crash"]
    return {
        "appendfsync": mode,
        "acknowledged": r["acknowledged"],
        "recovered (SIGKILL)": r["recovered"],
        "lost (SIGKILL)": r["lost"],
        "lost (host crash, simulated)": crash["lost"],
        "window s (host crash)": crash["window_seconds"],
        "AOF load s": r["aof_load_seconds"],
        "group state kept": "yes" if r["group_state_survived"] else "NO",
    }


def _torn_rows(torn: dict[str, Any]) -> list[dict[str, Any]]:
    """A torn AOF tail under both aof-load-truncated settings."""
    refused = "refuses to start" if torn["refused_with_load_truncated_no"] else "started"
    dropped = torn["dropped_events"]
    return [
        {"aof-load-truncated": "yes (shipped)", "outcome": "starts", "events dropped": dropped},
        {"aof-load-truncated": "no", "outcome": refused, "events dropped": "-"},
    ]
