"""The audit's checks of the live server's state: what INFO says has happened.

The last AOF and RDB writes, evictions, clients, fragmentation, and whether the port
answers without credentials. A failed write or an eviction means data is at risk now,
whatever the configuration says (ops/audit_checks.py checks the configuration).
"""

from __future__ import annotations

from skybuffer.ops.audit_checks import Check, Profile, Snapshot, fix_both


def check_aof_status(s: Snapshot, p: Profile) -> Check:
    write, rewrite = s.info.get("aof_last_write_status"), s.info.get("aof_last_bgrewrite_status")
    delayed = int(s.info.get("aof_delayed_fsync", 0))
    value = f"write={write} rewrite={rewrite} delayed_fsync={delayed}"
    if write not in (None, "ok"):
        return Check(
            "AOF status",
            "FAIL",
            value,
            "the last AOF write failed: Redis refuses every write (MISCONF)",
            "free disk space / fix permissions of the AOF dir; see the Redis log",
        )
    if rewrite not in (None, "ok") or delayed:
        return Check(
            "AOF status",
            "WARN",
            value,
            "a rewrite failed or fsync was delayed (the loss window grows past 1 s)",
            "check disk latency and free space; BGREWRITEAOF to retry",
        )
    return Check("AOF status", "PASS", value, "last write and rewrite succeeded")


def check_rdb_status(s: Snapshot, p: Profile) -> Check:
    status = s.info.get("rdb_last_bgsave_status", "ok")
    blocking = s.config.get("stop-writes-on-bgsave-error") == "yes" and s.config.get("save")
    if status == "ok":
        return Check("RDB status", "PASS", status, "last save succeeded (or none ran)")
    if blocking:
        return Check(
            "RDB status",
            "FAIL",
            status,
            "a failed BGSAVE with save points makes Redis refuse writes (MISCONF)",
            'fix the disk, then BGSAVE; or `save ""` (the AOF is the source of truth)',
        )
    return Check("RDB status", "WARN", status, "the last BGSAVE failed", "see the Redis log")


def check_default_user(s: Snapshot, p: Profile) -> Check:
    if s.default_user_open is None:
        return Check(
            "ACL default user",
            "WARN",
            "unknown",
            "could not probe the port without credentials",
            "ACL SETUSER default off",
        )
    if s.default_user_open:
        return Check(
            "ACL default user",
            "FAIL",
            "open (no password)",
            "anyone who reaches the port runs any command (FLUSHALL included)",
            "ACL SETUSER default off (users.acl: `user default off ...`), or requirepass",
        )
    return Check("ACL default user", "PASS", "off or password", "unauthenticated PING refused")


def check_clients(s: Snapshot, p: Profile) -> Check:
    limit, used = int(s.config.get("maxclients", 0)), int(s.info.get("connected_clients", 0))
    value = f"{used} of {limit}"
    if limit < 64 or used > 0.9 * limit:
        return Check(
            "maxclients",
            "WARN",
            value,
            "little room for writer, exporter and operators",
            fix_both("maxclients", "1000"),
        )
    return Check("maxclients", "PASS", value, "room to spare")


def check_fragmentation(s: Snapshot, p: Profile) -> Check:
    ratio, used = float(s.info.get("mem_fragmentation_ratio", 1.0)), int(s.info["used_memory"])
    value = f"{ratio:.2f}"
    if used < 64 * 2**20:
        return Check("fragmentation", "PASS", value, "not meaningful below 64 MB used")
    if ratio > 1.5:
        return Check(
            "fragmentation",
            "WARN",
            value,
            "RSS is 1.5x the data: memory is wasted",
            fix_both("activedefrag", "yes"),
        )
    if ratio < 1.0:
        return Check(
            "fragmentation",
            "WARN",
            value,
            "RSS below used memory: Redis is swapping",
            "lower maxmemory or add RAM",
        )
    return Check("fragmentation", "PASS", value, "healthy")


def check_evictions(s: Snapshot, p: Profile) -> Check:
    evicted = int(s.info.get("evicted_keys", 0))
    if evicted:
        return Check(
            "evicted keys",
            "FAIL",
            str(evicted),
            "keys were evicted since start: if they were streams, their events are gone",
            fix_both("maxmemory-policy", "noeviction"),
        )
    return Check("evicted keys", "PASS", "0", "nothing evicted since start")
