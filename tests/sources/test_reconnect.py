"""The reconnect policy on its own: which host comes next, and how long the reader waits.
(The reader that follows it is tested against a real local Jetstream in test_jetstream.py.)"""

from __future__ import annotations

from skybuffer.settings import JetstreamSettings
from skybuffer.sources.reconnect import Reconnects

A, B = "ws://a.example/subscribe", "ws://b.example/subscribe"


def policy(**overrides: object) -> Reconnects:
    settings = JetstreamSettings.model_validate(
        {"backoff_initial_seconds": 1.0, "backoff_max_seconds": 8.0} | overrides
    )
    return Reconnects(settings, [A, B])


def test_failures_in_a_row_rotate_to_the_next_host_and_back_around() -> None:
    reconnects = policy(failures_before_rotate=2)
    reconnects.ended(A, "connect_failed", "refused", delivered=False)
    assert reconnects.url == A
    reconnects.ended(A, "connect_failed", "refused", delivered=False)
    assert reconnects.url == B
    for _ in range(2):
        reconnects.ended(B, "connect_failed", "refused", delivered=False)
    assert reconnects.url == A


def test_a_connection_that_delivered_resets_the_count_of_failures() -> None:
    reconnects = policy(failures_before_rotate=2)
    reconnects.ended(A, "connect_failed", "refused", delivered=False)
    reconnects.ended(A, "server_closed", "close code 1000", delivered=True)
    reconnects.ended(A, "connect_failed", "refused", delivered=False)
    assert reconnects.url == A


def test_the_delay_doubles_with_failures_up_to_the_cap_with_jitter_below_it() -> None:
    reconnects = policy(failures_before_rotate=100)
    for failures in range(1, 7):
        reconnects.ended(A, "connect_failed", "refused", delivered=False)
        ceiling = min(8.0, 1.0 * 2**failures)
        assert ceiling / 2 <= reconnects.delay(delivered=False) <= ceiling


def test_after_a_connection_that_delivered_the_delay_is_the_initial_one() -> None:
    reconnects = policy()
    for _ in range(5):
        reconnects.ended(A, "connect_failed", "refused", delivered=False)
    assert 0.5 <= reconnects.delay(delivered=True) <= 1.0
