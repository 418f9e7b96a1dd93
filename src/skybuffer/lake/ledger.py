"""The lake's own memory: what it committed, and which events a replay must not add again.

Redis may forget (a restart that lost its last second of AOF, a failover to a lagging
replica, a restored snapshot). Entries whose rows are already in the lake can then come
back: with their old IDs (their commit was forgotten: the DataWriter rewrites them and
replaces the old files, see lake/writer.py), or re-read from the source in new entries
with new IDs (the entries themselves were forgotten). Only the lake can know about the
second kind, so it keeps a **ledger** (``_skybuffer/ledger.json``): per type, the last
stream ID published and the last one committed. Redis keeps the same "last committed"
in the commit script; when Redis's is behind the lake's, Redis forgot.

Then the DataWriter builds a **replay guard** for the type: the identities of the events
in the lake files of the forgotten span (IDs after Redis's last commit up to the lake's
last publish), and drops those events from every newer entry, once each. The guard is
saved (``_skybuffer/guard-{type}.arrow``) so a restart keeps it, and expires after
``writer.replay_guard_seconds``.

Why identities and not deterministic entry IDs: entries are micro-batches cut by time
(linger) and size, so a re-read cuts them differently, and Jetstream's replay reorders
events within a second; only the event's identity is stable. Why only after a detected
forget: computing identities costs ~20% of the writer's time; the guard costs nothing
on the normal path. An event's identity is (did, collection, rkey, rev, operation) for a
commit (the same on every Jetstream host) and (did, kind, relay seq or time_us) for
identity and account events, hashed to 64 bits (MD5's low half: 1e-7 odds of a false
match with 3.6M guarded events against 3.6M new ones).

Files under ``_skybuffer/`` are not ``*.parquet`` under a type's directory: no reader's
glob sees them.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from skybuffer.buffer.stream_ids import id_key
from skybuffer.processes import fsync

log = logging.getLogger(__name__)

STATE_DIR = "_skybuffer"
IDENTITY = pa.uint64()


def identity_sql(type_: str) -> str:
    """DuckDB expression of an event's identity over a lake table's columns."""
    other = "coalesce(relay_seq::VARCHAR, time_us::VARCHAR)" if type_ == "other" else "time_us"
    return (
        "md5_number_lower(concat_ws(chr(31), did, kind, coalesce(collection, ''), "
        "coalesce(rkey, ''), coalesce(rev, ''), coalesce(operation, ''), "
        f"CASE WHEN kind = 'commit' THEN '' ELSE {other}::VARCHAR END))"
    )


def identities(type_: str, table: pa.Table) -> pa.Array:
    """The identity of every row of ``table`` (lake columns), in row order (DuckDB's
    md5, loaded only here: a replay guard is rare, and the writer's path has no DuckDB)."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    try:
        con.register("t", table)
        result = con.sql(f"SELECT {identity_sql(type_)} AS id FROM t").to_arrow_table()
    finally:
        con.close()
    return result["id"].combine_chunks().cast(IDENTITY)


@dataclass
class ReplayGuard:
    """Identities to drop, once each, from entries newer than ``after``."""

    type: str
    after: str
    identities: pa.Array
    expires: float
    changed: bool = False
    """Set when events were dropped since it was last saved."""
    tentative: pa.Array | None = None
    """Identities dropped from the batch being written, not yet committed: they leave the
    guard only when that batch commits (``settle``). A batch that fails after dropping them
    (Redis gone, the lease lost, a lake write) is written again, and must drop them again."""

    @property
    def active(self) -> bool:
        return len(self.identities) > 0 and time.time() < self.expires

    def applies_to(self, entry_id: str) -> bool:
        return id_key(entry_id) > id_key(self.after)

    def drop_replayed(self, table: pa.Table, newer: pa.Array) -> tuple[pa.Table, int]:
        """``table`` without the guarded events among rows where ``newer`` is true, each
        dropped once per batch (the source replays an event once)."""
        ids = identities(self.type, table)
        hit = pc.and_(pc.is_in(ids, value_set=self._untaken()), newer)
        dropped = pc.sum(hit).as_py() or 0
        if not dropped:
            return table, 0
        seen = pc.unique(pc.filter(ids, hit))
        taken = seen if self.tentative is None else pa.concat_arrays([self.tentative, seen])
        self.tentative = taken
        return table.filter(pc.invert(hit)), dropped

    def settle(self) -> None:
        """The batch committed: what it dropped leaves the guard for good."""
        if self.tentative is None:
            return
        self.identities = self._untaken()
        self.tentative = None
        self.changed = True

    def abandon(self) -> None:
        """The batch did not commit: what it dropped stays guarded for its next attempt."""
        self.tentative = None

    def _untaken(self) -> pa.Array:
        if self.tentative is None:
            return self.identities
        return pc.filter(self.identities, pc.invert(pc.is_in(self.identities, self.tentative)))


class Ledger:
    """The lake's record per type of the last stream IDs published and committed, and
    (``guards``) its saved replay guards. Local lakes only keep it durably (fsync'd); see
    module docstring."""

    def __init__(self, root: str, partition: str = "") -> None:
        """``partition``: a buffer partition's own ledger ("p1"; its stream IDs are its own)."""
        self.directory = os.path.join(root, STATE_DIR)
        tag = f"-{partition}" if partition else ""
        self.path = os.path.join(self.directory, f"ledger{tag}.json")
        self.guards = GuardFiles(self.directory, tag)
        self._state: dict[str, dict[str, str]] = self._load()

    def last(self, type_: str, what: str) -> str:
        """'published' or 'committed' ID of ``type_`` ('' when never recorded)."""
        return self._state.get(type_, {}).get(what, "")

    def record(self, type_: str, what: str, entry_id: str) -> None:
        """Durably raise the ``what`` ID of ``type_`` to ``entry_id`` (never lowers it)."""
        current = self.last(type_, what)
        if current and id_key(current) >= id_key(entry_id):
            return
        self._state.setdefault(type_, {})[what] = entry_id
        _replace_durably(self.path, orjson.dumps(self._state, option=orjson.OPT_INDENT_2))

    def accept(self, type_: str, entry_id: str) -> None:
        """Take Redis's word after it forgot: both IDs of ``type_`` back to ``entry_id``
        (the files past it are rewritten from the buffer or guarded against replays)."""
        self._state[type_] = {"published": entry_id, "committed": entry_id}
        _replace_durably(self.path, orjson.dumps(self._state, option=orjson.OPT_INDENT_2))

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            with open(self.path, "rb") as handle:
                state = orjson.loads(handle.read())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error("The lake ledger %s cannot be read (%s); starting a new one.", self.path, exc)
            return {}
        return state if isinstance(state, dict) else {}


class GuardFiles:
    """The saved replay guards, one Arrow file per type (``guard-{type}.arrow`` in the
    ledger's directory; ``guard-{partition}-{type}.arrow`` for a partition's), so a
    restarted writer keeps guarding; an expired guard is deleted when it is next loaded
    or saved."""

    def __init__(self, directory: str, tag: str = "") -> None:
        self.directory = directory
        self.tag = tag

    def load(self, type_: str) -> ReplayGuard | None:
        """The type's guard while it is active; None when there is none (any more)."""
        path = self._path(type_)
        if not os.path.exists(path):
            return None
        table = feather.read_table(path)
        meta = table.schema.metadata or {}
        guard = ReplayGuard(
            type_,
            meta.get(b"after", b"0-0").decode(),
            table["identity"].combine_chunks(),
            float(meta.get(b"expires", b"0")),
        )
        if not guard.active:
            self.drop(type_)
            return None
        return guard

    def save(self, guard: ReplayGuard) -> None:
        if not guard.active:
            self.drop(guard.type)
            return
        meta = {"after": guard.after, "expires": str(guard.expires)}
        table = pa.table({"identity": guard.identities}).replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        feather.write_feather(table, sink, compression="uncompressed")
        _replace_durably(self._path(guard.type), sink.getvalue().to_pybytes())

    def drop(self, type_: str) -> None:
        try:
            os.unlink(self._path(type_))
        except FileNotFoundError:
            pass

    def _path(self, type_: str) -> str:
        return os.path.join(self.directory, f"guard{self.tag}-{type_}.arrow")


def _replace_durably(path: str, data: bytes) -> None:
    """Replace ``path`` atomically and durably (temp, fsync, rename, fsync dir)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    temp = f"{path}.tmp"
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync(directory)


GUARD_COLUMNS = ("did", "kind", "collection", "rkey", "rev", "operation", "time_us")


def guard_columns(type_: str) -> tuple[str, ...]:
    """The lake columns an identity is computed from."""
    return (*GUARD_COLUMNS, "relay_seq") if type_ == "other" else GUARD_COLUMNS


def guard_identities(type_: str, table: pa.Table) -> pa.Array:
    """Unique identities of a table of lake rows (the guard of a type)."""
    if not table.num_rows:
        return pa.array([], IDENTITY)
    return pc.unique(identities(type_, table))
