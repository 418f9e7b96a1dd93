"""The Jetstream reader's reconnect policy: which host the next connection goes to, and
how long to wait before it.

Reconnects back off exponentially with jitter; a connection that delivered messages
resets the backoff; ``failures_before_rotate`` failures in a row move to the next URL.
The policy only counts and decides: the reader (sources/subscription.py) connects,
sleeps and resumes.
"""

from __future__ import annotations

import logging
import random

from skybuffer import metrics
from skybuffer.settings import JetstreamSettings

log = logging.getLogger("skybuffer.sources.subscription")  # the reader's own lines

SLOW_CONSUMER_WARNING = (
    "Jetstream dropped %s while the buffer pushed back (slow consumer); reconnecting to %s "
    "from the ingested cursor: lossless while that cursor is inside Jetstream's replay "
    "window (~24 h)."
)
RECONNECT_WARNING = "Jetstream connection to %s ended (%s: %s); reconnecting to %s."


class Reconnects:
    """Where and when the next connection goes, from how the last ones ended."""

    def __init__(self, settings: JetstreamSettings, urls: list[str]) -> None:
        self.settings = settings
        self.urls = urls
        self._url_index = 0
        self._failures = 0
        self._backoff_exp = 0

    @property
    def url(self) -> str:
        """The host the next connection goes to."""
        return self.urls[self._url_index % len(self.urls)]

    def ended(self, url: str, cause: str, detail: str, delivered: bool) -> None:
        """Count a connection that ended, rotate to the next host after too many failures
        in a row, and say where the reader goes next."""
        metrics.SOURCE_RECONNECTS.labels(cause).inc()
        if delivered:
            self._failures, self._backoff_exp = 0, 0
        else:
            self._failures += 1
            self._backoff_exp += 1
        rotate = self._failures >= self.settings.failures_before_rotate
        if rotate and len(self.urls) > 1:
            self._failures = 0
            self._url_index += 1
        if cause == "slow_consumer":
            log.warning(SLOW_CONSUMER_WARNING, url, self.url)
        else:
            log.warning(RECONNECT_WARNING, url, cause, detail, self.url)

    def delay(self, delivered: bool) -> float:
        """Between half and all of initial * 2^failures (capped): jitter keeps a fleet of
        clients from reconnecting in step after an outage."""
        s = self.settings
        ceiling = min(s.backoff_max_seconds, s.backoff_initial_seconds * 2**self._backoff_exp)
        if delivered:
            ceiling = s.backoff_initial_seconds
        return random.uniform(ceiling / 2, ceiling)
