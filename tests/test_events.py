"""Every real Jetstream event classifies into its type; bad input gets a reason."""

from __future__ import annotations

import orjson
import pytest

from skybuffer.events import InvalidEvent, Reason, classify

EXPECTED_GOLDEN_TYPES = {
    "app.bsky.feed.like": "likes",
    "app.bsky.feed.post": "posts",
    "app.bsky.feed.repost": "reposts",
    "app.bsky.graph.follow": "follows",
    "app.bsky.graph.block": "blocks",
}


def test_every_golden_event_classifies_into_its_type(golden_lines: list[bytes]) -> None:
    seen = set()
    for raw in golden_lines:
        event = orjson.loads(raw)
        collection = (event.get("commit") or {}).get("collection")
        expected = EXPECTED_GOLDEN_TYPES.get(collection, "other")
        assert classify(raw, 1_000_000) == expected, raw[:120]
        seen.add(expected)
    assert seen == {"posts", "likes", "reposts", "follows", "blocks", "other"}


def test_identity_account_and_unknown_kinds_are_kept_as_other() -> None:
    for kind in ("identity", "account", "sync"):
        raw = orjson.dumps({"did": "did:plc:abc", "time_us": 1, "kind": kind, kind: {}})
        assert classify(raw, 10_000) == "other"


def test_delete_without_record_or_cid_is_valid() -> None:
    raw = orjson.dumps(
        {
            "did": "did:plc:abc",
            "time_us": 5,
            "kind": "commit",
            "commit": {"rev": "x", "operation": "delete",
                       "collection": "app.bsky.graph.follow", "rkey": "3l3dn7tku762u"},
        }
    )  # fmt: skip
    assert classify(raw, 10_000) == "follows"


def _commit(**commit: object) -> bytes:
    base: dict[str, object] = {"operation": "create", "collection": "app.bsky.feed.like",
                               "rkey": "k"}  # fmt: skip
    base.update(commit)
    return orjson.dumps({"did": "did:plc:a", "time_us": 1, "kind": "commit", "commit": base})


BAD_INPUTS = [
    (b"x" * 2000, Reason.TOO_LARGE),
    (b"{not json", Reason.NOT_JSON),
    (b"", Reason.NOT_JSON),
    (b"[1, 2]", Reason.NOT_OBJECT),
    (b'{"time_us": 1, "kind": "commit"}', Reason.BAD_DID),
    (b'{"did": 7, "time_us": 1, "kind": "commit"}', Reason.BAD_DID),
    (b'{"did": "did:plc:a", "kind": "commit"}', Reason.BAD_TIME_US),
    (b'{"did": "did:plc:a", "time_us": "1", "kind": "commit"}', Reason.BAD_TIME_US),
    (b'{"did": "did:plc:a", "time_us": true, "kind": "commit"}', Reason.BAD_TIME_US),
    (b'{"did": "did:plc:a", "time_us": 1}', Reason.BAD_KIND),
    (b'{"did": "did:plc:a", "time_us": 1, "kind": "commit"}', Reason.BAD_COMMIT),
    (_commit(collection=None), Reason.BAD_COLLECTION),
    (_commit(rkey=""), Reason.BAD_RKEY),
    (_commit(operation="upsert"), Reason.BAD_OPERATION),
    (
        b'{"did": "did:plc:a", "time_us": 253402300800000000, "kind": "identity"}',
        Reason.BAD_TIME_US,
    ),  # past the year 9999: no partition for it
    # An unknown field holding bytes that are not UTF-8: msgspec would skip it unread.
    (_commit()[:-1] + b', "x": "\xc3\x28\xa0\xa1"}', Reason.INVALID_UTF8),
    (_commit(rkey="k").replace(b'"k"', b'"k\xed\xb2\x80"'), Reason.INVALID_UTF8),  # a surrogate
]


@pytest.mark.parametrize(("raw", "reason"), BAD_INPUTS)
def test_bad_input_is_rejected_with_its_reason(raw: bytes, reason: Reason) -> None:
    with pytest.raises(InvalidEvent) as caught:
        classify(raw, 1000)
    assert caught.value.reason == reason


def test_valid_utf8_beyond_ascii_is_accepted() -> None:
    raw = _commit(rkey="k", record={"text": "héllo 🌍 日本"})
    assert not raw.isascii() and classify(raw, 10_000) == "likes"
