"""`skybuffer lake forget`: one account's rows out of the lake, exactly once, crash-safe.

The steps, each of which survives a kill -9:

1. Under the sealing lock (no seal runs beside it, lake/sealing.py) and under every
   buffer partition's publish lock, the request is recorded durably in the lake's list
   of forgotten accounts (lake/erasures.py). From then on every DataWriter withholds the
   account's rows from what it writes; a batch staged before is staged again.
2. Every file that holds the account's rows is rewritten without them (lake/eraser.py):
   sealed hours get new files and a new manifest, open files are rewritten in place.
3. The request is marked done, with the rows removed per type.

A run killed between 1 and 3 leaves the request pending: the next `lake forget` or
sealing run (the hourly flow) finishes it, and a rewrite that already happened is not
done again (rewriting is idempotent), so no row is removed twice and none is missed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from skybuffer.buffer.partitions import Partitions
from skybuffer.constants import TYPES
from skybuffer.lake.eraser import Eraser
from skybuffer.lake.erasures import Erasure, Erasures, validate_did
from skybuffer.lake.sealing import Sealer
from skybuffer.lake.writer import publish_lock
from skybuffer.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ForgetReport:
    """The requests a run finished, and every request the lake holds."""

    finished: list[Erasure] = field(default_factory=list)
    requests: list[Erasure] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "finished": [asdict(e) for e in self.finished],
            "rows_removed": sum(sum(e.rows_removed.values()) for e in self.finished),
            "requests": [asdict(e) for e in self.requests],
            "seconds": round(self.seconds, 3),
        }


def forget(
    settings: Settings,
    dids: list[str],
    keep_out: bool = False,
    checkpoint: Callable[[str], None] | None = None,
) -> ForgetReport:
    """Record a request for each of ``dids`` and carry out every pending request (none
    given: only the pending ones, e.g. of a killed run)."""
    for did in dids:
        validate_did(did)
    started = time.monotonic()
    sealer = Sealer(settings.lake, checkpoint)
    erasures = Erasures(sealer.root)
    with sealer.exclusive(wait=True):
        if dids:
            with _every_publish_lock(settings, sealer.root):
                now_us = time.time_ns() // 1000
                for did in dids:
                    erasures.request(did, now_us, keep_out)
            log.info("Recorded the erasure of %s; rewriting the lake's files.", ", ".join(dids))
        finished = finish_erasures(settings, sealer, erasures)
    report = ForgetReport(finished, sorted(erasures.accounts.values(), key=lambda e: e.did))
    report.seconds = time.monotonic() - started
    return report


def finish_erasures(
    settings: Settings, sealer: Sealer, erasures: Erasures | None = None
) -> list[Erasure]:
    """Carry out every pending request; the caller holds the sealing lock."""
    erasures = erasures or Erasures(sealer.root)
    eraser = Eraser(sealer, lambda partition: publish_lock(sealer.root, partition))
    finished = []
    for erasure in erasures.pending():
        removed = {type_: eraser.erase(erasure, type_) for type_ in TYPES}
        erasures.finish(erasure.did, {t: n for t, n in removed.items() if n})
        finished.append(erasures.accounts[erasure.did])
        log.info("Forgot %s: %d rows removed from the lake.", erasure.did, sum(removed.values()))
    return finished


@contextmanager
def _every_publish_lock(settings: Settings, root: str) -> Iterator[None]:
    """Every buffer partition's publish lock (and the unpartitioned one), in one order."""
    names = sorted({"", *Partitions.of_settings(settings.redis).names()})
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(publish_lock(root, name))
        yield
