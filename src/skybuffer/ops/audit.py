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
from dataclasses import asdict
from typing import Any

import redis

from skybuffer.buffer.server import no_retry
from skybuffer.buffer.topology import connect
from skybuffer.constants import TYPES, Keys
from skybuffer.ops.audit_checks import (
    EXPECTED,
    PROFILES,
    Check,
    Profile,
    Snapshot,
    check_appendfsync,
    check_appendonly,
    check_bind,
    check_headroom,
    check_latency_monitor,
    check_maxmemory,
    check_policy,
    check_stream_nodes,
    eight_hour_need,
    expect,
    throughput_note,
)
from skybuffer.ops.audit_state import (
    check_aof_status,
    check_clients,
    check_default_user,
    check_evictions,
    check_fragmentation,
    check_rdb_status,
)
from skybuffer.ops.report import (
    RATES,
    Report,
    Table,
    target_of,
)
from skybuffer.settings import Settings

__all__ = ["PROFILES", "run_audit"]

CHECKS: list[Callable[[Snapshot, Profile], Check]] = [
    check_maxmemory,
    check_policy,
    check_evictions,
    check_appendonly,
    check_appendfsync,
    *(expect(*row) for row in EXPECTED[:3]),
    check_aof_status,
    check_rdb_status,
    check_bind,
    expect(*EXPECTED[3]),
    check_default_user,
    check_stream_nodes,
    check_clients,
    check_latency_monitor,
    check_fragmentation,
    check_headroom,
]

"""Every check, in the order the report lists them."""

# Never requirepass or masterauth: secrets stay on the server.
CONFIG_NAMES = (
    "maxmemory",
    "maxmemory-policy",
    "appendonly",
    "appendfsync",
    "no-appendfsync-on-rewrite",
    "aof-use-rdb-preamble",
    "aof-load-truncated",
    "save",
    "stop-writes-on-bgsave-error",
    "bind",
    "protected-mode",
    "stream-node-max-bytes",
    "stream-node-max-entries",
    "maxclients",
    "latency-monitor-threshold",
)


def run_audit(settings: Settings, profile_name: str = "default") -> Report:
    """Audit the live Redis of ``settings`` (the managed one, or ``redis.url``)."""
    profile = PROFILES[profile_name]
    client = connect(settings.redis, settings.redis_dir)
    snap = take_snapshot(client, Keys(settings.redis.prefix))
    checks = [check(snap, profile) for check in CHECKS]
    if profile.min_ops_per_s:
        checks.append(throughput_note(profile))
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
    probe = redis.Redis(
        host=kwargs["host"],
        port=kwargs.get("port", 6379),
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=no_retry(),
    )
    try:
        return bool(probe.ping())
    except (redis.AuthenticationError, redis.ResponseError):
        return False
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    finally:
        probe.close()


def buffer_hours(s: Snapshot, p: Profile, high_water: float) -> dict[str, float]:
    """Hours of buffer below the high-water mark at each reference rate."""
    need = eight_hour_need(s, p)
    usable = int(s.config.get("maxmemory", 0)) * high_water - need["baseline_bytes"]
    return {
        name: round(max(0.0, usable) / (need["bytes_per_event"] * rate) / 3600, 1)
        for name, rate in RATES.items()
    }


def _report(
    client: redis.Redis, p: Profile, s: Snapshot, checks: list[Check], high_water: float
) -> Report:
    counts = {
        status: sum(c.status == status for c in checks)
        for status in ("PASS", "WARN", "FAIL", "INFO")
    }
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
    rows = [
        {
            "setting": c.setting,
            "status": c.status,
            "value": c.value,
            "reason": c.reason,
            "fix": c.fix,
        }
        for c in checks
    ]
    hours = [{"rate": name, "hours of buffer": h} for name, h in hours_at.items()]
    notes = [
        f"Profile {p.name}: {p.description}. Summary: "
        + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        + ".",
        "FAIL means data can be lost or writes refused; WARN means a risk or a slower "
        "recovery; each row gives the exact fix. The command exits 1 on any FAIL.",
        f"Hours of buffer: (maxmemory x {high_water:.0%} high-water - baseline) / "
        "(bytes per event x rate).",
    ]
    return Report(
        command="audit",
        title=f"skybuffer audit ({p.name} profile)",
        data=data,
        tables=[Table(f"audit: {p.name} profile", rows), Table("buffer at each rate", hours)],
        notes=notes,
        exit_code=1 if counts["FAIL"] else 0,
    )
