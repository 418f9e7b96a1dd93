"""Events become rows of an explicit schema per type, and rows give the events back."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from skybuffer.constants import TYPES
from skybuffer.events import classify
from skybuffer.lake.extraction import SqlRowBuilder
from skybuffer.lake.schema import Rows, rebuild_event, schema
from skybuffer.testbed.generator import generate

T0 = 1_779_719_009_000_000  # 2026-05-25T14:23:29Z


def one(build: Callable[..., Rows], type_: str, line: bytes) -> dict:
    [row] = build(type_, [line]).table.to_pylist()
    return row


def test_every_type_has_an_explicit_schema_with_the_common_and_audit_columns() -> None:
    for type_ in TYPES:
        names = schema(type_).names
        assert names[:5] == ["stream_id", "stream_index", "did", "time_us", "event_time"]
        assert {"kind", "operation", "collection", "rkey", "rev", "cid"} <= set(names)
        assert names[-2:] == ["record_json", "extra_json"]
        assert str(schema(type_).field("event_time").type) == "timestamp[us, tz=UTC]"


def test_a_post_gets_its_text_langs_reply_and_embed_columns(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> None:
    row = one(build, "posts", by_type["posts"][0])
    assert row["text"] == "Try RSV for a good time !!"
    assert row["langs"] == ["en"]
    assert row["created_at"] == "2026-05-25T14:23:28.757Z"
    assert row["created_at_ts"].isoformat() == "2026-05-25T14:23:28.757000+00:00"
    assert row["reply_root_uri"].endswith("/app.bsky.feed.post/3mmojbrjwbs26")
    assert row["reply_parent_cid"].startswith("bafyrei")
    assert row["embed_type"] is None
    assert (row["kind"], row["operation"], row["collection"]) == (
        "commit", "create", "app.bsky.feed.post",
    )  # fmt: skip
    assert row["event_time"].isoformat() == "2026-05-25T14:23:29.157119+00:00"


def test_likes_reposts_follows_and_blocks_get_their_subjects(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> None:
    like = one(build, "likes", by_type["likes"][0])
    assert like["subject_uri"].startswith("at://did:plc:vfnmgxg2yscfliemmcxzyfyh/")
    assert like["subject_cid"].startswith("bafyrei") and like["via_uri"] is None
    assert one(build, "reposts", by_type["reposts"][0])["subject_uri"].startswith("at://")
    assert one(build, "follows", by_type["follows"][0])["subject_did"].startswith("did:plc:")
    assert one(build, "blocks", by_type["blocks"][0])["subject_did"].startswith("did:plc:")


def test_identity_and_account_events_get_their_fields(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> None:
    rows = build("other", by_type["other"]).table.to_pylist()
    identity = next(r for r in rows if r["kind"] == "identity")
    account = next(r for r in rows if r["kind"] == "account")
    assert identity["relay_seq"] == 30340180350 and identity["collection"] is None
    assert account["active"] is True and account["relay_time"] == "2026-05-25T14:23:29.950Z"
    profile = next(r for r in rows if r["collection"] == "app.bsky.actor.profile")
    assert profile["record_type"] == "app.bsky.actor.profile"


def test_every_row_rebuilds_its_original_event(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> None:
    synthetic = generate(7, 4000, T0)
    for type_ in TYPES:
        lines = by_type.get(type_, []) + [e for e in synthetic if classify(e, 10**6) == type_]
        rows = build(type_, lines, per_entry=50).table.to_pylist()
        assert [rebuild_event(r) for r in rows] == [orjson.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("type_", "line"),
    [
        ("likes", b'{"did":"did:plc:x","time_us":1779719009132431,"kind":"commit","cursor":77,'
                  b'"commit":{"rev":"r","operation":"delete","collection":"app.bsky.feed.like",'
                  b'"rkey":"k","extra":{"a":[1,2]}}}'),
        ("other", b'{"did":"did:plc:y","time_us":1779719009132432,"kind":"sync",'
                  b'"sync":{"blocks":"x"},"cursor":5}'),
        ("other", b'{"did":"did:plc:y","time_us":1779719009132433,"kind":"identity",'
                  b'"identity":{"did":"did:plc:y","handle":"a.b","seq":1,"new":true},"z":null}'),
    ],
)  # fmt: skip
def test_envelope_keys_without_a_column_stay_in_extra_json(
    build: Callable[..., Rows], type_: str, line: bytes
) -> None:
    row = one(build, type_, line)
    assert row["extra_json"] is not None
    assert rebuild_event(row) == orjson.loads(line)


def test_known_envelopes_have_no_extra_json(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> None:
    for type_, lines in by_type.items():
        assert build(type_, lines).table["extra_json"].null_count == len(lines)


@pytest.mark.parametrize(
    ("created", "parsed"),
    [
        ("2026-05-25T14:23:28+09:00", "2026-05-25T05:23:28+00:00"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"),
        ("yesterday", None),
        ("2026-13-45T00:00:00Z", None),
    ],
)
def test_created_at_is_kept_as_sent_and_parsed_when_it_can_be(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]], created: str, parsed: str | None
) -> None:
    event = orjson.loads(by_type["likes"][0])
    event["commit"]["record"]["createdAt"] = created
    row = one(build, "likes", orjson.dumps(event))
    assert row["created_at"] == created
    assert (row["created_at_ts"].isoformat() if row["created_at_ts"] else None) == parsed


def test_lines_that_are_not_events_come_back_as_rejects_with_their_reason(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> None:
    lines = [
        by_type["likes"][0],
        b"not json",
        b'{"did":"did:plc:z","time_us":99999999999999999999,"kind":"commit"}',
        b'{"did":"nobody","time_us":1,"kind":"commit"}',
    ]
    rows = build("likes", lines, per_entry=4)
    assert rows.table.num_rows == 1
    assert [(r.stream_index, r.reason, r.line) for r in rows.rejects] == [
        (1, "not_json", lines[1]), (2, "bad_time_us", lines[2]), (3, "bad_did", lines[3]),
    ]  # fmt: skip


def test_rows_carry_their_entry_id_and_position_and_their_hour(
    build: Callable[..., Rows], by_type: dict[str, list[bytes]]
) -> None:
    rows = build("other", by_type["other"], per_entry=2)
    ids = rows.table.select(["stream_id", "stream_index"]).to_pylist()
    assert ids[:3] == [
        {"stream_id": "1000-0", "stream_index": 0},
        {"stream_id": "1000-0", "stream_index": 1},
        {"stream_id": "1001-0", "stream_index": 0},
    ]
    assert set(rows.hours.to_pylist()) == {1_779_719_009_132_431 // 3_600_000_000}


def test_the_duckdb_row_builder_runs_on_the_threads_it_is_given() -> None:
    """DuckDB's threads each keep their own parse buffers: ``writer.duckdb_threads``."""
    for threads in (1, 2):
        builder = SqlRowBuilder(threads)
        try:
            got = builder._con.sql("SELECT current_setting('threads')").fetchall()
        finally:
            builder.close()
        assert got == [(threads,)]
