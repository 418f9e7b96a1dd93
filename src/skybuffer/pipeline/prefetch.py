"""Reading the source ahead of the ingester, on a thread (pipeline/ingest.py)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from skybuffer.buffer.producer import Classified, Encoder
from skybuffer.settings import IngestSettings
from skybuffer.sources.base import Source


class Prefetcher:
    """Reads and classifies the next source batches on a thread, at most two ahead.

    Classifying is Python work; compressing and writing release the GIL. Overlapping
    the two is faster even on two cores, where redis-server competes for the second one
    (docs/BENCHMARKS.md, "bench ingest"). The queue is tiny, so backpressure
    still reaches the source at once: when the ingester stops pulling, the thread blocks
    and stops reading its source. Batches it holds when the ingester stops are simply
    not written: the cursor never covered them, and the source re-reads them.

    ``limit`` (a run's ``--count``) is a number of valid events: the source is asked for
    batches no larger than the valid events still wanted, so a batch never takes more than
    the limit however many of its events turn out dead letters; when dead letters leave
    the room smaller than the batch size, the source is asked again with the smaller size
    (a source continues where its last batch ended). It ends once ``limit`` valid events
    were handed on: dead letters are taken but do not count.
    """

    _END = object()

    def __init__(
        self,
        source: Source,
        encoder: Encoder,
        settings: IngestSettings,
        stop: threading.Event,
        limit: int | None = None,
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=2)
        self._stop = stop
        self._done = threading.Event()
        self._source = source
        self._encoder = encoder
        self._settings = settings
        self._wanted = limit
        self._thread = threading.Thread(target=self._work, name="ingest-classify", daemon=True)

    def __iter__(self) -> Iterator[Classified]:
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._done.set()
            self._source.close()

    def _work(self) -> None:
        try:
            while self._read_source():
                pass
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            self._put(exc)

    def _read_source(self) -> bool:
        """Classify and hand on batches of the size still wanted; True to ask the source
        again with a smaller size, False when done (source ended, limit met, stopped)."""
        size = self._batch_size()
        if size == 0:
            return False
        batches = self._source.batches(size, self._settings.linger_seconds)
        try:
            for batch in batches:
                item = self._encoder.classify(batch.position, batch.events, batch.rejects)
                if not self._put(item):
                    return False
                if self._wanted is not None:
                    self._wanted -= sum(len(events) for events in item.by_type.values())
                    if self._wanted < size:
                        return self._wanted > 0
            return False
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # a generator's files and sockets, at once

    def _batch_size(self) -> int:
        batch = self._settings.batch_events
        return batch if self._wanted is None else min(batch, self._wanted)

    def _put(self, item: object) -> bool:
        while not self._done.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
