"""The audit's profiles and checks: one function per Redis setting, each a verdict.

A ``Profile`` says what one setup asks of Redis (skybuffer's shipped redis.conf, or the
seed's MET-27 requirements); a check reads a ``Snapshot`` (CONFIG GET and INFO, taken
once) and returns PASS / WARN / FAIL / INFO, the reason and the exact fix. ops/audit.py
runs them and writes the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skybuffer.ops.report import BUFFER_HOURS, SEED_RATE, STEADY_RATE, eight_hours, events_in

GIB = 1024**3
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
        "default",
        "skybuffer's shipped redis.conf",
        2 * GIB,
        "noeviction",
        "everysec",
        rate=STEADY_RATE,
    ),
    "met27": Profile(
        "met27",
        "the seed's MET-27 requirements",
        2 * GIB,
        "allkeys-lru",
        "everysec",
        rate=SEED_RATE,
        min_ops_per_s=1_000,
    ),
}


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


def fix_both(name: str, value: str) -> str:
    return f"CONFIG SET {name} {value} (and `{name} {value}` in redis.conf)"


def check_maxmemory(s: Snapshot, p: Profile) -> Check:
    limit = int(s.config.get("maxmemory", 0))
    system = int(s.info.get("total_system_memory", 0))
    value = f"{limit / GIB:.2f} GB"
    if limit == 0:
        return Check(
            "maxmemory",
            "FAIL",
            "0 (no limit)",
            "Redis grows until the kernel's OOM killer ends it, and the whole buffer with it",
            fix_both("maxmemory", "2gb"),
        )
    if system and limit > 0.8 * system:
        return Check(
            "maxmemory",
            "WARN",
            value,
            f"above 80% of the host's "
            f"{system / GIB:.1f} GB: an AOF rewrite forks and needs copy-on-write "
            "room",
            fix_both("maxmemory", f"{int(0.6 * system / 2**20)}mb"),
        )
    if limit < p.maxmemory_bytes:
        return Check(
            "maxmemory",
            "WARN",
            value,
            f"the {p.name} profile asks for {p.maxmemory_bytes / GIB:.0f} GB",
            fix_both("maxmemory", "2gb"),
        )
    return Check("maxmemory", "PASS", value, "bounded, within the host's memory")


def check_policy(s: Snapshot, p: Profile) -> Check:
    policy = s.config.get("maxmemory-policy", "")
    if policy == "noeviction":
        extra = (
            ""
            if p.policy == policy
            else (f"; deliberate: the {p.name} profile asks {p.policy}, which evicts whole streams")
        )
        return Check(
            "maxmemory-policy",
            "PASS",
            policy,
            "at the limit XADD is refused (loud) "
            "and skybuffer backs off; nothing is deleted" + extra,
        )
    fix = fix_both("maxmemory-policy", "noeviction")
    if policy.startswith("allkeys") or s.stream_keys:
        return Check(
            "maxmemory-policy",
            "FAIL",
            policy,
            "eviction deletes whole keys: a "
            "stream key is every buffered event of a type plus its consumer group "
            "(silent mass loss)"
            + (f"; {s.stream_keys} stream keys at risk now" if s.stream_keys else ""),
            fix,
        )
    return Check(
        "maxmemory-policy",
        "WARN",
        policy,
        "evicts keys with a TTL; streams have none, but say what you mean",
        fix,
    )


def check_appendonly(s: Snapshot, p: Profile) -> Check:
    if s.config.get("appendonly") == "yes":
        return Check("appendonly", "PASS", "yes", "every write is logged; a restart replays it")
    return Check(
        "appendonly",
        "FAIL",
        s.config.get("appendonly", "?"),
        "without the AOF a restart loses the buffer (or everything since the last RDB save)",
        fix_both("appendonly", "yes"),
    )


def check_appendfsync(s: Snapshot, p: Profile) -> Check:
    mode = s.config.get("appendfsync", "?")
    if mode == "always":
        return Check("appendfsync", "PASS", mode, "no loss window; costs write throughput")
    if mode == "everysec":
        return Check(
            "appendfsync",
            "PASS",
            mode,
            "loss window <= ~1-2 s of writes on a host crash (a Redis crash alone loses nothing)",
        )
    return Check(
        "appendfsync",
        "FAIL",
        mode,
        "the kernel flushes when it likes (~30 s of writes lost on a host crash)",
        fix_both("appendfsync", "everysec"),
    )


def expect(setting: str, wanted: str, good: str, bad: str) -> Callable[[Snapshot, Profile], Check]:
    """A check that a yes/no setting holds its safe value; WARN with the fix otherwise."""

    def check(s: Snapshot, p: Profile) -> Check:
        value = s.config.get(setting, "?")
        if value == wanted:
            return Check(setting, "PASS", value, good)
        return Check(setting, "WARN", value, bad, fix_both(setting, wanted))

    return check


# (setting, safe value, why it is safe, what goes wrong otherwise): WARN when not safe.
EXPECTED = [
    (
        "no-appendfsync-on-rewrite",
        "no",
        "fsync continues during rewrites",
        "during every rewrite the loss window is ~30 s",
    ),
    (
        "aof-use-rdb-preamble",
        "yes",
        "compact base file, fast load",
        "rewrites and restarts are slower",
    ),
    (
        "aof-load-truncated",
        "yes",
        "a torn tail after a crash is dropped and Redis starts",
        "after a crash that tears the AOF tail Redis refuses to start until redis-check-aof --fix",
    ),
    (
        "protected-mode",
        "yes",
        "refuses remote clients without auth",
        "remote clients may connect as the default user",
    ),
]


def check_bind(s: Snapshot, p: Profile) -> Check:
    addresses = s.config.get("bind", "").split()
    loopback = all(
        a.lstrip("-") in ("127.0.0.1", "::1", "localhost") or a.lstrip("-").startswith("127.")
        for a in addresses
    )
    if addresses and loopback:
        return Check("bind", "PASS", " ".join(addresses), "loopback only")
    return Check(
        "bind",
        "WARN",
        " ".join(addresses) or "(all)",
        "reachable from the network",
        "bind 127.0.0.1 -::1 (compose: keep Redis on the internal network)",
    )


def check_stream_nodes(s: Snapshot, p: Profile) -> Check:
    max_bytes = int(s.config.get("stream-node-max-bytes", 4096))
    entries = int(s.config.get("stream-node-max-entries", 100))
    value = f"{max_bytes} B / {entries} entries"
    if max_bytes == 0 or entries == 0 or max_bytes > 1 << 20 or entries > 10_000:
        return Check(
            "stream nodes",
            "WARN",
            value,
            "huge nodes: XDEL/XTRIM free memory only when a whole node goes",
            "stream-node-max-bytes 4096, stream-node-max-entries 100",
        )
    return Check("stream nodes", "PASS", value, "bounded listpack nodes")


def check_latency_monitor(s: Snapshot, p: Profile) -> Check:
    value = s.config.get("latency-monitor-threshold", "0")
    if int(value) > 0:
        return Check("latency-monitor-threshold", "PASS", f"{value} ms", "spikes are recorded")
    return Check(
        "latency-monitor-threshold",
        "WARN",
        value,
        "LATENCY LATEST records nothing",
        fix_both("latency-monitor-threshold", "100"),
    )


def check_headroom(s: Snapshot, p: Profile) -> Check:
    """Does the 8-hour need fit below maxmemory, with room for overhead and spikes?"""
    need = eight_hour_need(s, p)
    limit = int(s.config.get("maxmemory", 0))
    if not limit:
        return Check(
            "8-hour headroom",
            "FAIL",
            "no maxmemory",
            "cannot be sized without a limit",
            fix_both("maxmemory", "2gb"),
        )
    share = need["total_bytes"] / limit
    value = f"{share:.0%} of maxmemory for {eight_hours(p.rate)}"
    why = f"{need['bytes_per_event']:.0f} B/event ({need['bytes_source']})"
    fix = fix_both("maxmemory", f"{int(need['total_bytes'] / 0.75 / 2**20) + 1}mb")
    if share <= 0.75:
        return Check("8-hour headroom", "PASS", value, why + "; below the 75% low-water mark")
    if share <= 1.0:
        return Check(
            "8-hour headroom",
            "WARN",
            value,
            why + "; fits with < 25% to spare for spikes, fragmentation and AOF rewrite buffers",
            fix,
        )
    return Check("8-hour headroom", "FAIL", value, why + "; 8 hours do not fit", fix)


def eight_hour_need(s: Snapshot, p: Profile) -> dict[str, Any]:
    """Bytes for the profile's 8 hours: measured per event when the server holds enough
    skybuffer events, else the codec's figure; plus today's baseline."""
    per_event, source = CODEC_BYTES_PER_EVENT, CODEC_SOURCE
    if s.buffered_events >= MEASURE_MIN_EVENTS:
        per_event = s.stream_bytes / s.buffered_events
        source = f"measured on {s.buffered_events:,} buffered events"
    baseline = max(0, int(s.info["used_memory"]) - s.stream_bytes)
    return {
        "bytes_per_event": per_event,
        "bytes_source": source,
        "baseline_bytes": baseline,
        "total_bytes": baseline + per_event * p.events_8h,
    }


def throughput_note(p: Profile) -> Check:
    return Check(
        "throughput",
        "INFO",
        f">= {p.min_ops_per_s:,} ops/s asked",
        "the audit does not load the server",
        "measure it: `skybuffer bench redis`",
    )
