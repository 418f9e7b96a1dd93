"""The current-state views: the latest version of each record by rev, deletes applied,
taken-down and deleted accounts applied, over lakes written by the real lake writer."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from skybuffer.cli import app
from skybuffer.constants import TYPES
from skybuffer.events import classify
from skybuffer.lake.query import run_query
from skybuffer.lake.schema import Rows
from skybuffer.lake.staging import StagedBatch
from skybuffer.lake.writer import LakeWriter
from skybuffer.settings import LakeSettings

T0 = 1_779_717_600_000_000  # 2026-05-25T14:00:00Z
SECOND = 1_000_000
ALICE, BOB = "did:plc:alice", "did:plc:bob"
POST, LIKE = "app.bsky.feed.post", "app.bsky.feed.like"
Write = Callable[..., None]


def commit(
    did: str,
    operation: str,
    rkey: str,
    rev: str,
    at: int,
    collection: str = POST,
    text: str = "",
) -> bytes:
    """A Jetstream commit event; ``at``: seconds after T0. Deletes carry no record."""
    body: dict[str, Any] = {
        "rev": rev,
        "operation": operation,
        "collection": collection,
        "rkey": rkey,
    }
    if operation != "delete":
        record: dict[str, Any] = {"$type": collection, "createdAt": "2026-05-25T14:00:00Z"}
        if collection == POST:
            record["text"] = text
        else:
            record["subject"] = {"uri": f"at://{BOB}/{POST}/p1", "cid": "bafyc"}
        body |= {"record": record, "cid": f"bafy{rev}"}
    event = {"did": did, "time_us": T0 + at * SECOND, "kind": "commit", "commit": body}
    return orjson.dumps(event)


def account(did: str, active: bool, status: str | None, seq: int, at: int) -> bytes:
    payload: dict[str, Any] = {"active": active, "did": did, "seq": seq, "time": "2026-05-25"}
    if status is not None:
        payload["status"] = status
    return orjson.dumps(
        {"did": did, "time_us": T0 + at * SECOND, "kind": "account", "account": payload}
    )


@pytest.fixture
def write(lake: LakeSettings, build: Callable[..., Rows]) -> Write:
    """Write events into the lake as one DataWriter run would: a file per type and hour,
    each call with stream IDs after the previous call's."""
    writer = LakeWriter(lake, "w1", 300)
    first_ms = count(1000, 1000)

    def write_lines(*lines: bytes) -> None:
        start = next(first_ms)
        by_type: dict[str, list[bytes]] = {}
        for line in lines:
            by_type.setdefault(classify(line, SECOND), []).append(line)
        for type_, typed in by_type.items():
            rows = build(type_, typed, first_ms=start)
            staged = StagedBatch(writer, type_, rows.table["stream_id"][0].as_py())
            staged.append(rows.table, rows.hours)
            writer.publish(staged.finish(), set(rows.table["stream_id"].to_pylist()))

    return write_lines


def current(lake: LakeSettings, type_: str = "posts", columns: str = "rkey, text") -> list[Any]:
    sql = f"SELECT {columns} FROM {type_}_current ORDER BY ALL"
    return run_query(lake, sql).rows


def test_every_type_has_a_current_view_even_before_it_has_files(lake: LakeSettings) -> None:
    for type_ in TYPES:
        assert run_query(lake, f"SELECT count(*) FROM {type_}_current").rows == [(0,)]
    assert run_query(lake, "SELECT count(*) FROM accounts_current").rows == [(0,)]


def test_the_golden_events_leave_each_record_that_was_not_deleted(
    write: Write, lake: LakeSettings, golden_lines: list[bytes]
) -> None:
    write(*golden_lines)
    counts = {t: run_query(lake, f"SELECT count(*) FROM {t}_current").rows[0][0] for t in TYPES}
    # The follow delete names a follow created before the capture: nothing to remove, and
    # the delete itself is no record. In other: a profile and a place.stream update stay,
    # the hypercerts delete does not, and identity/account events are not records.
    assert counts == {"posts": 1, "likes": 1, "reposts": 1, "follows": 1, "blocks": 1, "other": 2}
    assert current(lake, "other", "collection, operation") == [
        ("app.bsky.actor.profile", "update"),
        ("place.stream.broadcast.origin", "update"),
    ]
    accounts = run_query(lake, "SELECT did, active, withdrawn FROM accounts_current").rows
    assert accounts == [("did:plc:g4ut2w5755qxi3fe7mfs72p4", True, False)]


def test_an_updated_post_shows_its_last_version_whatever_order_the_files_came_in(
    write: Write, lake: LakeSettings
) -> None:
    write(commit(ALICE, "update", "p1", "3m0000000002a", at=20, text="second"))
    write(commit(ALICE, "create", "p1", "3m0000000001a", at=30, text="first"))  # a replay
    write(commit(ALICE, "create", "p2", "3m0000000003a", at=40, text="other post"))
    assert current(lake) == [("p1", "second"), ("p2", "other post")]
    assert current(lake, columns="rkey, operation, rev")[0] == ("p1", "update", "3m0000000002a")


def test_a_deleted_post_is_gone_and_a_replayed_older_create_does_not_bring_it_back(
    write: Write, lake: LakeSettings
) -> None:
    write(
        commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="hello"),
        commit(ALICE, "create", "p2", "3m0000000002a", at=2, text="kept"),
    )
    write(commit(ALICE, "delete", "p1", "3m0000000003a", at=3))
    write(commit(ALICE, "create", "p1", "3m0000000001a", at=4, text="hello"))
    assert current(lake) == [("p2", "kept")]


def test_a_record_created_again_after_its_delete_is_back_with_its_new_content(
    write: Write, lake: LakeSettings
) -> None:
    write(
        commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="first"),
        commit(ALICE, "delete", "p1", "3m0000000002a", at=2),
    )
    write(commit(ALICE, "create", "p1", "3m0000000003a", at=3, text="again"))
    assert current(lake) == [("p1", "again")]


def test_equal_revs_are_one_operation_and_a_delete_among_them_wins(
    write: Write, lake: LakeSettings
) -> None:
    twice = commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="once")
    write(twice, commit(ALICE, "create", "p2", "3m0000000001a", at=1, text="p2"))
    write(twice, commit(ALICE, "delete", "p2", "3m0000000001a", at=2))
    assert current(lake) == [("p1", "once")]


def test_a_taken_down_account_loses_every_record_until_it_is_active_again(
    write: Write, lake: LakeSettings
) -> None:
    write(
        commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="alice"),
        commit(ALICE, "create", "l1", "3m0000000002a", at=2, collection=LIKE),
        commit(BOB, "create", "p1", "3m0000000001b", at=3, text="bob"),
    )
    write(account(ALICE, False, "takendown", seq=10, at=4))
    assert current(lake, columns="did, text") == [(BOB, "bob")]
    assert current(lake, "likes", "did") == []
    write(account(ALICE, True, None, seq=11, at=5))
    assert current(lake, columns="did, text") == [(ALICE, "alice"), (BOB, "bob")]
    assert current(lake, "likes", "did") == [(ALICE,)]


def test_the_newest_account_event_is_the_one_with_the_greatest_relay_seq(
    write: Write, lake: LakeSettings
) -> None:
    write(commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="alice"))
    write(account(ALICE, False, "takendown", seq=10, at=9))
    write(account(ALICE, True, None, seq=9, at=10))  # an older event, replayed by another host
    assert current(lake) == []
    status = run_query(lake, "SELECT status, withdrawn FROM accounts_current").rows
    assert status == [("takendown", True)]


def test_a_deleted_account_that_returns_shows_only_what_it_wrote_afterwards(
    write: Write, lake: LakeSettings
) -> None:
    write(
        commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="before"),
        account(ALICE, False, "deleted", seq=10, at=2),
    )
    assert current(lake) == []
    write(
        account(ALICE, True, None, seq=11, at=3),
        commit(ALICE, "create", "p2", "3m0000000002a", at=4, text="after"),
    )
    assert current(lake) == [("p2", "after")]


def test_a_deactivated_account_keeps_its_records(write: Write, lake: LakeSettings) -> None:
    write(
        commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="resting"),
        account(ALICE, False, "deactivated", seq=10, at=2),
    )
    assert current(lake) == [("p1", "resting")]


def test_skybuffer_query_answers_from_the_current_views(
    write: Write, lake: LakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(commit(ALICE, "create", "p1", "3m0000000001a", at=1, text="hello"))
    monkeypatch.setenv("SKYBUFFER_LAKE__ROOT", str(lake.root))
    data_dir = str(Path(str(lake.root)).parent / "data")
    sql = "SELECT count(*) AS n FROM posts_current"
    result = CliRunner().invoke(app, ["query", "--json", "--data-dir", data_dir, sql])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == [{"n": 1}]
