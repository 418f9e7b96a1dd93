"""The DataWriter's side of a Redis that forgot: notice it, keep the lake free of replays.

Before each batch the writer compares Redis's record of a type's last commit
(``skybuffer:writer:committed``, kept by the commit script) with the lake ledger's
(lake/ledger.py). When Redis is behind what the lake published, Redis forgot: commits
only (its entries are still there, pending or new again: the writer rewrites them and
replaces their files, as after a crash), or entries too (the ingester re-reads their
events from the source into new entries). For the second kind, each lake file of the
span keeps only the rows of entries Redis no longer has, and their identities become the
type's replay guard: each is dropped once from newer entries. Then the ledger takes
Redis's word, and the writer goes on.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
import redis

from skybuffer.buffer.consumer import StreamConsumer
from skybuffer.buffer.stream_ids import id_key
from skybuffer.constants import Keys
from skybuffer.lake.ledger import IDENTITY, Ledger, ReplayGuard, guard_columns, guard_identities
from skybuffer.lake.schema import Rows
from skybuffer.lake.writer import LakeWriter
from skybuffer.observability import writer_stats

log = logging.getLogger(__name__)


class Forgetting:
    """Notices a Redis that forgot commits, and guards the lake against the replay.

    The writer calls ``notice`` before a batch, ``unreplayed`` on its rows, then ``save``
    or ``abandon``; the private steps after them build a guard when Redis forgot."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        consumer: StreamConsumer,
        lake: LakeWriter,
        ledger: Ledger | None,
        guard_seconds: float,
    ) -> None:
        self.client, self.keys, self.consumer = client, keys, consumer
        self.lake, self.ledger, self.guard_seconds = lake, ledger, guard_seconds
        self.guards: dict[str, ReplayGuard | None] = {}
        self._dropped: dict[str, int] = {}
        """Replayed copies dropped from the batch being written, per type (counted once it
        commits: a batch that fails drops them again on its retry)."""

    def notice(self, type_: str) -> None:
        """Compare Redis's last commit of ``type_`` with the lake's; guard if behind."""
        if self.ledger is None:
            return  # an object-store lake keeps no ledger (documented)
        if type_ not in self.guards:
            self.guards[type_] = self.ledger.guards.load(type_)
        published = self.ledger.last(type_, "published")
        if not published:
            return
        redis_last = self.consumer.committed(type_)
        if id_key(redis_last) < id_key(published):
            with self.lake.publishing():  # it rewrites lake files, as `lake forget` does
                self._guard(type_, redis_last, published)

    def unreplayed(self, type_: str, rows: Rows) -> tuple[pa.Table, pa.Array, int]:
        """The rows and their hours, less the replayed copies the guard knows; how many."""
        guard = self.guards.get(type_)
        if guard is None or not guard.active:
            return rows.table, rows.hours, 0
        ids = pc.unique(rows.table["stream_id"]).to_pylist()
        newer = pa.array([i for i in ids if guard.applies_to(i)], pa.string())
        mask = pc.is_in(rows.table["stream_id"], value_set=newer)
        with_hours = rows.table.append_column("_hour", rows.hours)
        table, dropped = guard.drop_replayed(with_hours, mask)
        if dropped:
            self._dropped[type_] = self._dropped.get(type_, 0) + dropped
            log.warning("%s: dropped %d replayed events the lake already holds.", type_, dropped)
        return table.drop_columns(["_hour"]), table["_hour"].combine_chunks(), dropped

    def save(self, type_: str) -> int:
        """After a commit: what the batch dropped leaves the guard, durably; returns how
        many replayed copies the committed batch left out."""
        dropped = self._dropped.pop(type_, 0)
        if dropped:
            writer_stats.remember(
                self.client, self.keys, writer_stats.record_replayed, type_, dropped
            )
        guard = self.guards.get(type_)
        if guard is None:
            return dropped
        guard.settle()
        if guard.changed and self.ledger is not None:
            self.ledger.guards.save(guard)
            guard.changed = False
        return dropped

    def abandon(self, type_: str) -> None:
        """A batch that did not commit gives back what it dropped (its retry drops it)."""
        self._dropped.pop(type_, None)
        guard = self.guards.get(type_)
        if guard is not None:
            guard.abandon()

    def _guard(self, type_: str, redis_last: str, published: str) -> None:
        assert self.ledger is not None
        paths = self.lake.files_between(type_, redis_last, published)
        ids = self._keep_what_redis_lost(type_, paths)
        committed = self.ledger.last(type_, "committed")
        if len(ids):
            previous = self.guards.get(type_)
            if previous is not None:
                previous.abandon()
            if previous is not None and previous.active:
                ids = pc.unique(pa.concat_arrays([previous.identities, ids]))
            guard = ReplayGuard(type_, published, ids, time.time() + self.guard_seconds)
            self.guards[type_] = guard
            self.ledger.guards.save(guard)
        if len(ids) or (committed and id_key(redis_last) < id_key(committed)):
            log.error(
                "%s: Redis forgot commits (its last is %s, the lake's %s); %d events of %d "
                "lake files are no longer in the buffer: each is dropped once if the source "
                "replays it.",
                type_,
                redis_last,
                committed or published,
                len(ids),
                len(paths),
            )
            writer_stats.remember(
                self.client, self.keys, writer_stats.record_forgot, type_, len(ids)
            )
        self.ledger.accept(type_, redis_last)

    def _keep_what_redis_lost(self, type_: str, paths: list[str]) -> pa.Array:
        """Each file keeps the rows of entries Redis no longer has (their events may come
        back in new entries: the guard's identities) and gives up the rows of entries
        Redis still has (rewritten from them)."""
        kept = []
        for path in paths:
            held = self.lake.entries_of(path)
            gone = held - self._present(type_, sorted(held, key=id_key))
            kept.append(self.lake.keep_only(path, gone).select(list(guard_columns(type_))))
        return guard_identities(type_, pa.concat_tables(kept)) if kept else pa.array([], IDENTITY)

    def _present(self, type_: str, entry_ids: list[str]) -> set[str]:
        """The entries of ``entry_ids`` still in the stream."""
        stream = self.keys.stream(type_)
        pipe = self.client.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xrange(stream, entry_id, entry_id, count=1)
        return {i for i, found in zip(entry_ids, pipe.execute(), strict=True) if found}
