"""`skybuffer audit`: is this Redis fit to be an 8-hour, lossless buffer?

Reads CONFIG GET and INFO from the live server (read-only: the pipeline user may run
both) and checks each setting against a profile, with PASS / WARN / FAIL, the reason and
the exact fix. Two profiles:

- ``default``: skybuffer's shipped redis.conf (noeviction, AOF everysec, 2 GB, 8 hours
  at today's ~350 ev/s: ``report.events_in``, 10,080,000 events).
- ``met27``: the seed's MET-27 requirements (2 GB, allkeys-lru, AOF everysec, 2.7M
  events in 8 h, >= 1,000 ops/s). Auditing a server set up that way shows its user what
  it risks: eviction deletes whole streams (DESIGN.md).

Both size the buffer with skybuffer's bytes per event (measured on the server once it
holds enough events, else the codec's ~140 B): the server buffers skybuffer's entries,
not the seed's plain JSON. Safety rules are the same under both profiles (a profile says
what its author wanted, not what is safe), and where skybuffer departs from a profile on
purpose (noeviction, not MET-27's allkeys-lru) the check PASSes and says so: the shipped
redis.conf audits with no WARN. A FAIL makes the command exit non-zero."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from skybuffer.buffer.server import connect, no_retry
from skybuffer.constants import TYPES, Keys
from skybuffer.ops.report import (
    BUFFER_HOURS,
    RATES,
    SEED_RATE,
    STEADY_RATE,
    Report,
    Table,
    eight_hours,
    events_in,
    target_of,
)
from skybuffer.settings import Settings

GIB = 1024**3
# Never requirepass or masterauth: secrets stay on the server.
CONFIG_NAMES = (
    "maxmemory", "maxmemory-policy", "appendonly", "appendfsync", "no-appendfsync-on-rewrite",
    "aof-use-rdb-preamble", "aof-load-truncated", "save", "stop-writes-on-bgsave-error",
    "bind", "protected-mode", "stream-node-max-bytes", "stream-node-max-entries",
    "maxclients", "latency-monitor-threshold",
)  # fmt: skip
MEASURE_MIN_EVENTS = 10_000  # below this, bytes/event from MEMORY USAGE is noise
CODEC_BYTES_PER_EVENT = 140.0
CODEC_SOURCE = "skybuffer's codec, measured: docs/BENCHMARKS.md"


@dataclass(frozen=True)
class Profile:
    """What one setup asks of Redis."""

    name: str
    description: str
    maxmemory_bytes: int
    policy: str
    appendfsync: str
    rate: float
    """ev/s the buffer must hold BUFFER_HOURS of."""
    min_ops_per_s: int | None = None

    @property
    def events_8h(self) -> int:
        return events_in(BUFFER_HOURS, self.rate)


PROFILES = {
    "default": Profile(
        "default", "skybuffer's shipped redis.conf", 2 * GIB, "noeviction", "everysec",
        rate=STEADY_RATE,
    ),
    "met27": Profile(
        "met27", "the seed's MET-27 requirements", 2 * GIB, "allkeys-lru", "everysec",
        rate=SEED_RATE, min_ops_per_s=1_000,
    ),
}  # fmt: skip


@dataclass
class Check:
    setting: str
    status: str  # PASS | WARN | FAIL | INFO
    value: str
    reason: str
    fix: str = ""


@dataclass
class Snapshot:
    """Everything the checks read, taken once."""

    config: dict[str, str]
    info: dict[str, Any]
    stream_keys: int
    buffered_events: int
    stream_bytes: int
    default_user_open: bool | None


def run_audit(settings: Settings, profile_name: str = "default") -> Report:
    """Audit the live Redis of ``settings`` (the managed one, or ``redis.url``)."""
    profile = PROFILES[profile_name]
    client = connect(settings.redis, settings.redis_dir)
    snap = take_snapshot(client, Keys(settings.redis.prefix))
    checks = [check(snap, profile) for check in CHECKS]
    if profile.min_ops_per_s:
        checks.append(_throughput_note(profile))
    report = _report(client, profile, snap, checks, settings.ingest.high_water)
    return report.write(settings.reports_dir)


def take_snapshot(client: redis.Redis, keys: Keys) -> Snapshot:
    config = {str(k): str(v) for k, v in client.config_get(*CONFIG_NAMES).items()}
    info: dict[str, Any] = {}
    for section in ("server", "memory", "persistence", "stats", "clients"):
        info.update(client.info(section))
    counts = client.hgetall(keys.event_counts)
    stream_bytes = sum(client.memory_usage(keys.stream(t), samples=0) or 0 for t in TYPES)
    streams = sum(1 for _ in client.scan_iter(count=1000, _type="stream"))
    events = sum(max(0, int(v)) for v in counts.values())
    return Snapshot(config, info, streams, events, int(stream_bytes), _default_user_open(client))


def _default_user_open(client: redis.Redis) -> bool | None:
    """Try the server without credentials: if PING works, anyone on the port is admin."""
    kwargs = client.connection_pool.connection_kwargs
    if "host" not in kwargs:
        return None
    probe = redis.Redis(host=kwargs["host"], port=kwargs.get("port", 6379), socket_timeout=2,
                        socket_connect_timeout=2, retry=no_retry())  # fmt: skip
    try:
        return bool(probe.ping())
    except (redis.AuthenticationError, redis.ResponseError):
        return False
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    finally:
        probe.close()


def _fix(name: str, value: str) -> str:
    return f"CONFIG SET {name} {value} (and `{name} {value}` in redis.conf)"


# --- the checks: one function per setting ------------------------------------------------
def check_maxmemory(s: Snapshot, p: Profile) -> Check:
    limit = int(s.config.get("maxmemory", 0))
    system = int(s.info.get("total_system_memory", 0))
    value = f"{limit / GIB:.2f} GB"
    if limit == 0:
        return Check("maxmemory", "FAIL", "0 (no limit)", "Redis grows until the kernel's "
                     "OOM killer ends it, and the whole buffer with it",
                     _fix("maxmemory", "2gb"))  # fmt: skip
    if system and limit > 0.8 * system:
        return Check("maxmemory", "WARN", value, f"above 80% of the host's "
                     f"{system / GIB:.1f} GB: an AOF rewrite forks and needs copy-on-write "
                     "room", _fix("maxmemory", f"{int(0.6 * system / 2**20)}mb"))  # fmt: skip
    if limit < p.maxmemory_bytes:
        return Check("maxmemory", "WARN", value, f"the {p.name} profile asks for "
                     f"{p.maxmemory_bytes / GIB:.0f} GB", _fix("maxmemory", "2gb"))  # fmt: skip
    return Check("maxmemory", "PASS", value, "bounded, within the host's memory")


def check_policy(s: Snapshot, p: Profile) -> Check:
    policy = s.config.get("maxmemory-policy", "")
    if policy == "noeviction":
        extra = (
            ""
            if p.policy == policy
            else (f"; deliberate: the {p.name} profile asks {p.policy}, which evicts whole streams")
        )
        return Check("maxmemory-policy", "PASS", policy, "at the limit XADD is refused (loud) "
                     "and skybuffer backs off; nothing is deleted" + extra)  # fmt: skip
    fix = _fix("maxmemory-policy", "noeviction")
    if policy.startswith("allkeys") or s.stream_keys:
        return Check("maxmemory-policy", "FAIL", policy, "eviction deletes whole keys: a "
                     "stream key is every buffered event of a type plus its consumer group "
                     "(silent mass loss)" + (f"; {s.stream_keys} stream keys at risk now"
                     if s.stream_keys else ""), fix)  # fmt: skip
    return Check("maxmemory-policy", "WARN", policy, "evicts keys with a TTL; streams have "
                 "none, but say what you mean", fix)  # fmt: skip


def check_appendonly(s: Snapshot, p: Profile) -> Check:
    if s.config.get("appendonly") == "yes":
        return Check("appendonly", "PASS", "yes", "every write is logged; a restart replays it")
    return Check("appendonly", "FAIL", s.config.get("appendonly", "?"), "without the AOF a "
                 "restart loses the buffer (or everything since the last RDB save)",
                 _fix("appendonly", "yes"))  # fmt: skip


def check_appendfsync(s: Snapshot, p: Profile) -> Check:
    mode = s.config.get("appendfsync", "?")
    if mode == "always":
        return Check("appendfsync", "PASS", mode, "no loss window; costs write throughput")
    if mode == "everysec":
        return Check("appendfsync", "PASS", mode, "loss window <= ~1-2 s of writes on a host "
                     "crash (a Redis crash alone loses nothing)")  # fmt: skip
    return Check("appendfsync", "FAIL", mode, "the kernel flushes when it likes (~30 s of "
                 "writes lost on a host crash)", _fix("appendfsync", "everysec"))  # fmt: skip


def _expect(setting: str, wanted: str, good: str, bad: str) -> Callable[[Snapshot, Profile], Check]:
    """A check that a yes/no setting holds its safe value; WARN with the fix otherwise."""

    def check(s: Snapshot, p: Profile) -> Check:
        value = s.config.get(setting, "?")
        if value == wanted:
            return Check(setting, "PASS", value, good)
        return Check(setting, "WARN", value, bad, _fix(setting, wanted))

    return check


# (setting, safe value, why it is safe, what goes wrong otherwise): WARN when not safe.
EXPECTED = [
    ("no-appendfsync-on-rewrite", "no", "fsync continues during rewrites",
     "during every rewrite the loss window is ~30 s"),
    ("aof-use-rdb-preamble", "yes", "compact base file, fast load",
     "rewrites and restarts are slower"),
    ("aof-load-truncated", "yes", "a torn tail after a crash is dropped and Redis starts",
     "after a crash that tears the AOF tail Redis refuses to start until redis-check-aof --fix"),
    ("protected-mode", "yes", "refuses remote clients without auth",
     "remote clients may connect as the default user"),
]  # fmt: skip


def check_aof_status(s: Snapshot, p: Profile) -> Check:
    write, rewrite = s.info.get("aof_last_write_status"), s.info.get("aof_last_bgrewrite_status")
    delayed = int(s.info.get("aof_delayed_fsync", 0))
    value = f"write={write} rewrite={rewrite} delayed_fsync={delayed}"
    if write not in (None, "ok"):
        return Check("AOF status", "FAIL", value, "the last AOF write failed: Redis refuses "
                     "every write (MISCONF)", "free disk space / fix permissions of the AOF "
                     "dir; see the Redis log")  # fmt: skip
    if rewrite not in (None, "ok") or delayed:
        return Check("AOF status", "WARN", value, "a rewrite failed or fsync was delayed (the "
                     "loss window grows past 1 s)", "check disk latency and free space; "
                     "BGREWRITEAOF to retry")  # fmt: skip
    return Check("AOF status", "PASS", value, "last write and rewrite succeeded")


def check_rdb_status(s: Snapshot, p: Profile) -> Check:
    status = s.info.get("rdb_last_bgsave_status", "ok")
    blocking = s.config.get("stop-writes-on-bgsave-error") == "yes" and s.config.get("save")
    if status == "ok":
        return Check("RDB status", "PASS", status, "last save succeeded (or none ran)")
    if blocking:
        return Check("RDB status", "FAIL", status, "a failed BGSAVE with save points makes "
                     "Redis refuse writes (MISCONF)", "fix the disk, then BGSAVE; or "
                     '`save ""` (the AOF is the source of truth)')  # fmt: skip
    return Check("RDB status", "WARN", status, "the last BGSAVE failed", "see the Redis log")


def check_bind(s: Snapshot, p: Profile) -> Check:
    addresses = s.config.get("bind", "").split()
    loopback = all(a.lstrip("-") in ("127.0.0.1", "::1", "localhost") or
                   a.lstrip("-").startswith("127.") for a in addresses)  # fmt: skip
    if addresses and loopback:
        return Check("bind", "PASS", " ".join(addresses), "loopback only")
    return Check(
        "bind",
        "WARN",
        " ".join(addresses) or "(all)",
        "reachable from the network",
        "bind 127.0.0.1 -::1 (compose: keep Redis on the internal network)",
    )


def check_default_user(s: Snapshot, p: Profile) -> Check:
    if s.default_user_open is None:
        return Check("ACL default user", "WARN", "unknown", "could not probe the port "
                     "without credentials", "ACL SETUSER default off")  # fmt: skip
    if s.default_user_open:
        return Check("ACL default user", "FAIL", "open (no password)", "anyone who reaches the "
                     "port runs any command (FLUSHALL included)", "ACL SETUSER default off "
                     "(users.acl: `user default off ...`), or requirepass")  # fmt: skip
    return Check("ACL default user", "PASS", "off or password", "unauthenticated PING refused")


def check_stream_nodes(s: Snapshot, p: Profile) -> Check:
    max_bytes = int(s.config.get("stream-node-max-bytes", 4096))
    entries = int(s.config.get("stream-node-max-entries", 100))
    value = f"{max_bytes} B / {entries} entries"
    if max_bytes == 0 or entries == 0 or max_bytes > 1 << 20 or entries > 10_000:
        return Check("stream nodes", "WARN", value, "huge nodes: XDEL/XTRIM free memory only "
                     "when a whole node goes", "stream-node-max-bytes 4096, "
                     "stream-node-max-entries 100")  # fmt: skip
    return Check("stream nodes", "PASS", value, "bounded listpack nodes")


def check_clients(s: Snapshot, p: Profile) -> Check:
    limit, used = int(s.config.get("maxclients", 0)), int(s.info.get("connected_clients", 0))
    value = f"{used} of {limit}"
    if limit < 64 or used > 0.9 * limit:
        return Check("maxclients", "WARN", value, "little room for writer, exporter and "
                     "operators", _fix("maxclients", "1000"))  # fmt: skip
    return Check("maxclients", "PASS", value, "room to spare")


def check_latency_monitor(s: Snapshot, p: Profile) -> Check:
    value = s.config.get("latency-monitor-threshold", "0")
    if int(value) > 0:
        return Check("latency-monitor-threshold", "PASS", f"{value} ms", "spikes are recorded")
    return Check("latency-monitor-threshold", "WARN", value, "LATENCY LATEST records nothing",
                 _fix("latency-monitor-threshold", "100"))  # fmt: skip


def check_fragmentation(s: Snapshot, p: Profile) -> Check:
    ratio, used = float(s.info.get("mem_fragmentation_ratio", 1.0)), int(s.info["used_memory"])
    value = f"{ratio:.2f}"
    if used < 64 * 2**20:
        return Check("fragmentation", "PASS", value, "not meaningful below 64 MB used")
    if ratio > 1.5:
        return Check("fragmentation", "WARN", value, "RSS is 1.5x the data: memory is wasted",
                     _fix("activedefrag", "yes"))  # fmt: skip
    if ratio < 1.0:
        return Check("fragmentation", "WARN", value, "RSS below used memory: Redis is swapping",
                     "lower maxmemory or add RAM")  # fmt: skip
    return Check("fragmentation", "PASS", value, "healthy")


def check_evictions(s: Snapshot, p: Profile) -> Check:
    evicted = int(s.info.get("evicted_keys", 0))
    if evicted:
        return Check("evicted keys", "FAIL", str(evicted), "keys were evicted since start: if "
                     "they were streams, their events are gone",
                     _fix("maxmemory-policy", "noeviction"))  # fmt: skip
    return Check("evicted keys", "PASS", "0", "nothing evicted since start")


def check_headroom(s: Snapshot, p: Profile) -> Check:
    """Does the 8-hour need fit below maxmemory, with room for overhead and spikes?"""
    need = eight_hour_need(s, p)
    limit = int(s.config.get("maxmemory", 0))
    if not limit:
        return Check("8-hour headroom", "FAIL", "no maxmemory", "cannot be sized without a limit",
                     _fix("maxmemory", "2gb"))  # fmt: skip
    share = need["total_bytes"] / limit
    value = f"{share:.0%} of maxmemory for {eight_hours(p.rate)}"
    why = f"{need['bytes_per_event']:.0f} B/event ({need['bytes_source']})"
    fix = _fix("maxmemory", f"{int(need['total_bytes'] / 0.75 / 2**20) + 1}mb")
    if share <= 0.75:
        return Check("8-hour headroom", "PASS", value, why + "; below the 75% low-water mark")
    if share <= 1.0:
        return Check("8-hour headroom", "WARN", value, why + "; fits with < 25% to spare for "
                     "spikes, fragmentation and AOF rewrite buffers", fix)  # fmt: skip
    return Check("8-hour headroom", "FAIL", value, why + "; 8 hours do not fit", fix)


def eight_hour_need(s: Snapshot, p: Profile) -> dict[str, Any]:
    """Bytes for the profile's 8 hours: measured per event when the server holds enough
    skybuffer events, else the codec's figure; plus today's baseline."""
    per_event, source = CODEC_BYTES_PER_EVENT, CODEC_SOURCE
    if s.buffered_events >= MEASURE_MIN_EVENTS:
        per_event = s.stream_bytes / s.buffered_events
        source = f"measured on {s.buffered_events:,} buffered events"
    baseline = max(0, int(s.info["used_memory"]) - s.stream_bytes)
    return {"bytes_per_event": per_event, "bytes_source": source, "baseline_bytes": baseline,
            "total_bytes": baseline + per_event * p.events_8h}  # fmt: skip


def _throughput_note(p: Profile) -> Check:
    return Check("throughput", "INFO", f">= {p.min_ops_per_s:,} ops/s asked", "the audit does "
                 "not load the server", "measure it: `skybuffer bench redis`")  # fmt: skip


CHECKS: list[Callable[[Snapshot, Profile], Check]] = [
    check_maxmemory, check_policy, check_evictions, check_appendonly, check_appendfsync,
    *(_expect(*row) for row in EXPECTED[:3]), check_aof_status, check_rdb_status, check_bind,
    _expect(*EXPECTED[3]), check_default_user, check_stream_nodes, check_clients,
    check_latency_monitor, check_fragmentation, check_headroom,
]  # fmt: skip


# --- the report ------------------------------------------------------------------------------
def buffer_hours(s: Snapshot, p: Profile, high_water: float) -> dict[str, float]:
    """Hours of buffer below the high-water mark at each reference rate."""
    need = eight_hour_need(s, p)
    usable = int(s.config.get("maxmemory", 0)) * high_water - need["baseline_bytes"]
    return {name: round(max(0.0, usable) / (need["bytes_per_event"] * rate) / 3600, 1)
            for name, rate in RATES.items()}  # fmt: skip


def _report(
    client: redis.Redis, p: Profile, s: Snapshot, checks: list[Check], high_water: float
) -> Report:
    counts = {status: sum(c.status == status for c in checks) for status in
              ("PASS", "WARN", "FAIL", "INFO")}  # fmt: skip
    hours_at = buffer_hours(s, p, high_water)
    data: dict[str, Any] = {
        "profile": {**asdict(p), "events_8h": p.events_8h},
        "target": target_of(client),
        "summary": counts,
        "failed": [c.setting for c in checks if c.status == "FAIL"],
        "checks": [asdict(c) for c in checks],
        "buffer_hours_at": hours_at,
        "eight_hour_need": eight_hour_need(s, p),
        "used_memory": int(s.info["used_memory"]),
        "stream_keys": s.stream_keys,
    }
    rows = [{"setting": c.setting, "status": c.status, "value": c.value, "reason": c.reason,
             "fix": c.fix} for c in checks]  # fmt: skip
    hours = [{"rate": name, "hours of buffer": h} for name, h in hours_at.items()]
    notes = [
        f"Profile {p.name}: {p.description}. Summary: " +
        ", ".join(f"{n} {k}" for k, n in counts.items() if n) + ".",
        "FAIL means data can be lost or writes refused; WARN means a risk or a slower "
        "recovery; each row gives the exact fix. The command exits 1 on any FAIL.",
        f"Hours of buffer: (maxmemory x {high_water:.0%} high-water - baseline) / "
        "(bytes per event x rate).",
    ]  # fmt: skip
    return Report(
        command="audit", title=f"skybuffer audit ({p.name} profile)", data=data,
        tables=[Table(f"audit: {p.name} profile", rows), Table("buffer at each rate", hours)],
        notes=notes, exit_code=1 if counts["FAIL"] else 0,
    )  # fmt: skip
