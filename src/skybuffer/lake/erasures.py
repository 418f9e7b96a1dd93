"""The accounts the lake must not hold: erasure and takedown requests (`lake forget`).

``_skybuffer/erasures.json`` lists each forgotten account (DID) with the instant of its
request: the lake holds none of the account's rows with ``time_us`` up to then, and,
with ``keep_out``, none later either (an account that must stay out for good). It is
written atomically and durably, and each write raises its ``generation``.

Two parts of the pipeline honour it:
- the eraser (lake/eraser.py, pipeline/erasing.py) rewrites the files that hold the
  account's rows, sealed and open, and marks the request done;
- the DataWriter drops the account's rows from every batch it writes (``withhold``), so
  events still buffered, or replayed by the source later, never bring them back. A
  batch staged under an older generation is staged again before it is published
  (pipeline/datawriter.py): the request is recorded under every publish lock, so each
  file is either on disk before it (and the eraser rewrites it) or written after it.

Only an account's own rows are removed (``did`` is the account): others' likes of its
posts or follows of it are their records, not its.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from skybuffer.errors import ConfigError
from skybuffer.lake.ledger import STATE_DIR
from skybuffer.processes import fsync

ERASURES = "erasures.json"


@dataclass
class Erasure:
    """One account to forget."""

    did: str
    requested_at: str
    """ISO time of the request (UTC)."""
    before_us: int | None
    """Rows with time_us up to this are removed; None: all of them, now and later."""
    done_at: str = ""
    """When every file held before the request was rewritten ('' while pending)."""
    rows_removed: dict[str, int] = field(default_factory=dict)
    """Rows removed from the lake's files, per type (by the run that finished it)."""

    @property
    def pending(self) -> bool:
        return not self.done_at


def validate_did(did: str) -> str:
    """A DID as Bluesky writes it (``did:plc:…``, ``did:web:…``), else a clear error."""
    parts = did.split(":")
    if len(parts) < 3 or parts[0] != "did" or not all(parts[1:]) or any(c.isspace() for c in did):
        raise ConfigError(f"{did!r} is not a DID: give the account as did:plc:… or did:web:…")
    return did


class Erasures:
    """The lake's list of forgotten accounts, read fresh when it changed on disk."""

    def __init__(self, root: str) -> None:
        self.path = Path(root, STATE_DIR, ERASURES)
        self.generation = 0
        self.accounts: dict[str, Erasure] = {}
        self._stamp: tuple[int, int, int] | None = None

    def refresh(self) -> int:
        """Read the list if it changed on disk; the generation now in force."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self.generation, self.accounts, self._stamp = 0, {}, None
            return 0
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)  # each save is a new inode
        if stamp != self._stamp:
            data = json.loads(self.path.read_text())
            self.generation = int(data["generation"])
            self.accounts = {a["did"]: Erasure(**a) for a in data["accounts"]}
            self._stamp = stamp
        return self.generation

    def changed_since(self, generation: int) -> bool:
        return self.refresh() != generation

    def request(self, did: str, now_us: int, keep_out: bool) -> Erasure:
        """Add (or renew) a request and save the list; the caller holds the lake's locks."""
        self.refresh()
        requested = datetime.fromtimestamp(now_us / 1e6, UTC).isoformat(timespec="seconds")
        erasure = Erasure(validate_did(did), requested, None if keep_out else now_us)
        earlier = self.accounts.get(did)
        if earlier is not None and earlier.before_us is None:
            erasure.before_us = None  # a keep-out request stays one
        self.accounts[did] = erasure
        self.save()
        return erasure

    def finish(self, did: str, rows_removed: dict[str, int]) -> None:
        self.refresh()
        erasure = self.accounts[did]
        erasure.done_at = datetime.now(UTC).isoformat(timespec="seconds")
        erasure.rows_removed = rows_removed
        self.save()

    def pending(self) -> list[Erasure]:
        self.refresh()
        return [e for e in self.accounts.values() if e.pending]

    def save(self) -> None:
        """Atomically and durably, with the next generation."""
        self.generation += 1
        data = {
            "generation": self.generation,
            "accounts": [asdict(e) for e in sorted(self.accounts.values(), key=lambda e: e.did)],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "w") as handle:
            handle.write(json.dumps(data, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        fsync(str(self.path.parent))
        self._stamp = None

    def withhold(self, table: pa.Table, hours: pa.Array) -> tuple[pa.Table, pa.Array]:
        """``table`` without the rows of forgotten accounts, and ``hours`` alike."""
        if not self.accounts or table.num_rows == 0:
            return table, hours
        mask = forgotten_mask(table, list(self.accounts.values()))
        if mask is None:
            return table, hours
        keep = pc.invert(mask)
        return table.filter(keep), hours.filter(keep)


def forgotten_mask(table: pa.Table, erasures: list[Erasure]) -> pa.Array | None:
    """True for each row an erasure removes; None when no row is one (the usual case)."""
    dids = pa.array([e.did for e in erasures], pa.string())
    listed = pc.is_in(table["did"], value_set=dids)
    if not pc.any(listed).as_py():
        return None
    bounds = {e.did: e.before_us for e in erasures}
    rows = table.filter(listed).select(["did", "time_us"]).to_pylist()
    removed = iter([_removed(bounds[r["did"]], r["time_us"]) for r in rows])
    marks = [next(removed) if hit else False for hit in listed.to_pylist()]
    return pa.array(marks, pa.bool_())


def _removed(before_us: int | None, time_us: int | None) -> bool:
    return before_us is None or time_us is None or time_us <= before_us
