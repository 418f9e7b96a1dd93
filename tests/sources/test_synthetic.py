"""The synthetic source: real shapes, sizes and mix; byte-exact replay from any position.

Covers on purpose, through their one user: testbed/generator.py, testbed/records.py,
testbed/population.py and testbed/atproto.py (the shapes, sizes, mix, ids and times
asserted here are theirs) as well as sources/synthetic.py (pacing, resume, close)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from skybuffer.errors import ConfigError
from skybuffer.sources.synthetic import SyntheticSource
from skybuffer.testbed.atproto import BLOCK, FOLLOW, LIKE, POST, REPOST
from skybuffer.testbed.generator import CHUNK, generate
from skybuffer.testbed.records import DELETE_SHARE, MIX

START_US = 1_779_719_009_000_000  # 2026-05-25T14:23:29Z, the golden capture's second
STEP_US = 667  # round(1e6 / 1500)
N = 20_000
TYPES = {POST: "posts", LIKE: "likes", REPOST: "reposts", FOLLOW: "follows", BLOCK: "blocks"}
DID = re.compile(r"^did:(plc:[a-z2-7]{24}|web:[a-z0-9.-]+)$")
TID = re.compile(r"^[234567a-j][234567a-z]{12}$")
RECORD_CID = re.compile(r"^bafyrei[a-h][a-z2-7]{50}[aeimquy4]$")
BLOB_CID = re.compile(r"^bafkrei[a-h][a-z2-7]{50}[aeimquy4]$")
SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def raw() -> list[bytes]:
    return generate(42, N, START_US)


@pytest.fixture(scope="module")
def events(raw: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw]


def kind_of(event: dict[str, Any]) -> str:
    if event["kind"] != "commit":
        return "other"
    return TYPES.get(event["commit"]["collection"], "other")


def creates(events: list[dict[str, Any]], collection: str) -> list[dict[str, Any]]:
    return [
        e["commit"]["record"]
        for e in events
        if e["kind"] == "commit"
        and e["commit"]["collection"] == collection
        and e["commit"]["operation"] == "create"
    ]


def tid_us(tid: str) -> int:
    value = 0
    for char in tid:
        value = value * 32 + SORTABLE.index(char)
    return value >> 10


def drain(source: SyntheticSource, max_events: int = 700) -> tuple[list[bytes], list[str]]:
    events: list[bytes] = []
    positions: list[str] = []
    for batch in source.batches(max_events, 0.05):
        events += batch.events
        positions.append(batch.position)
    return events, positions


def test_same_seed_gives_same_bytes_and_another_seed_differs(raw: list[bytes]) -> None:
    assert generate(42, 3000, START_US) == raw[:3000]
    other = generate(43, 3000, START_US)
    assert sum(a != b for a, b in zip(other, raw, strict=False)) > 2900


def test_another_process_with_another_hash_seed_gives_the_same_bytes(raw: list[bytes]) -> None:
    code = (
        "import hashlib, sys; from skybuffer.testbed.generator import generate; "
        f"sys.stdout.write(hashlib.sha256(b''.join(generate(42, 3000, {START_US}))).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    digest = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert digest.stdout == hashlib.sha256(b"".join(raw[:3000])).hexdigest(), digest.stderr


def test_every_event_is_jetstream_v1_json(events: list[dict[str, Any]]) -> None:
    for event in events:
        assert DID.match(event["did"]) and isinstance(event["time_us"], int)
        assert event["kind"] in ("commit", "identity", "account")
        if event["kind"] != "commit":
            assert event[event["kind"]]["did"] == event["did"]
            continue
        commit = event["commit"]
        assert commit["operation"] in ("create", "update", "delete")
        assert commit["collection"] and commit["rkey"] and TID.match(commit["rev"])
        if commit["operation"] != "delete":
            assert commit["record"]["$type"] == commit["collection"]
            assert RECORD_CID.match(commit["cid"])


def test_time_us_advances_by_one_step_per_event(events: list[dict[str, Any]]) -> None:
    assert [e["time_us"] for e in events] == [START_US + i * STEP_US for i in range(N)]


def test_tids_encode_the_commit_and_client_times(events: list[dict[str, Any]]) -> None:
    likes = [e for e in events if e["kind"] == "commit" and e["commit"]["collection"] == LIKE]
    for event in likes[:1000]:
        commit = event["commit"]
        assert tid_us(commit["rev"]) == event["time_us"] - 20_000
        if commit["operation"] == "delete":
            assert tid_us(commit["rkey"]) < event["time_us"] - 60_000_000
            continue
        assert TID.match(commit["rkey"]) and tid_us(commit["rkey"]) < tid_us(commit["rev"])
        created = commit["record"]["createdAt"]
        if re.fullmatch(r".{19}\.\d{3}Z", created):
            assert created[20:23] == f"{tid_us(commit['rkey']) // 1000 % 1000:03d}"


def test_type_mix_matches_the_calibration(events: list[dict[str, Any]]) -> None:
    shares = {kind: count / N for kind, count in Counter(map(kind_of, events)).items()}
    assert set(shares) == set(MIX)
    for kind, expected in MIX.items():
        assert abs(shares[kind] - expected) < max(0.01, expected * 0.15), (kind, shares[kind])
    assert sum(MIX.values()) == pytest.approx(1.0)


def test_deletes_are_about_2_6_percent_and_carry_no_record_or_cid(
    events: list[dict[str, Any]],
) -> None:
    commits = [e["commit"] for e in events if e["kind"] == "commit"]
    deletes = [c for c in commits if c["operation"] == "delete"]
    updates = [c for c in commits if c["operation"] == "update"]
    assert abs(len(deletes) / N - DELETE_SHARE) < 0.006
    assert 0.008 < len(updates) / N < 0.02
    assert all("record" not in c and "cid" not in c for c in deletes)
    assert {c["collection"] for c in deletes} >= {LIKE, POST, REPOST, FOLLOW}


def test_sizes_match_real_jetstream_events(raw: list[bytes], events: list[dict[str, Any]]) -> None:
    by_kind: dict[str, list[int]] = {}
    for line, event in zip(raw, events, strict=True):
        commit = event.get("commit", {})
        key = f"{kind_of(event)}/{commit.get('operation', event['kind'])}"
        by_kind.setdefault(key, []).append(len(line))
    assert 480 <= statistics.mean(map(len, raw)) <= 650
    assert 650 <= statistics.mean(by_kind["posts/create"]) <= 1000
    assert 480 <= statistics.mean(by_kind["likes/create"]) <= 580
    assert 370 <= statistics.mean(by_kind["follows/create"]) <= 420
    assert 180 <= statistics.mean(by_kind["likes/delete"]) <= 220
    assert max(map(len, raw)) < 8000


def test_posts_have_replies_embeds_facets_langs_and_emoji(events: list[dict[str, Any]]) -> None:
    posts = creates(events, POST)
    assert 0.2 < sum("reply" in p for p in posts) / len(posts) < 0.4
    embeds = Counter(p["embed"]["$type"] for p in posts if "embed" in p)
    assert {"images", "external", "record", "recordWithMedia"} == {
        t.rsplit(".", 1)[1] for t in embeds
    }
    assert len({lang for p in posts for lang in p.get("langs", [])}) >= 6
    assert any(re.search("[\U0001f300-\U0001faff]", p["text"]) for p in posts)
    assert all(len(p["text"]) <= 300 for p in posts)
    blobs = [i["image"] for p in posts for i in p.get("embed", {}).get("images", [])]
    assert blobs and all(BLOB_CID.match(b["ref"]["$link"]) and b["size"] > 0 for b in blobs)


def test_facets_point_at_their_text_by_utf8_bytes(events: list[dict[str, Any]]) -> None:
    faceted = [p for p in creates(events, POST) if "facets" in p]
    features: Counter[str] = Counter()
    for post in faceted:
        for facet in post["facets"]:
            index, feature = facet["index"], facet["features"][0]
            piece = post["text"].encode()[index["byteStart"] : index["byteEnd"]].decode()
            features[feature["$type"].rsplit("#", 1)[1]] += 1
            assert piece[0] in "@#" or piece.endswith("...")
    assert set(features) == {"mention", "link", "tag"}


def test_likes_sometimes_come_via_a_repost(events: list[dict[str, Any]]) -> None:
    likes = creates(events, LIKE)
    vias = [like["via"] for like in likes if "via" in like]
    assert 0.12 < len(vias) / len(likes) < 0.22
    assert all("/app.bsky.feed.repost/" in via["uri"] for via in vias)


def test_popular_posts_repeat_with_identical_subject(events: list[dict[str, Any]]) -> None:
    subjects = [like["subject"] for like in creates(events, LIKE)]
    counts = Counter(s["uri"] for s in subjects)
    assert counts.most_common(1)[0][1] > 100  # a viral post: ~2 % of the likes
    assert len(counts) < len(subjects) / 2
    cids = {s["uri"]: s["cid"] for s in subjects}
    assert all(cids[s["uri"]] == s["cid"] for s in subjects)  # one uri, one cid
    actors = Counter(e["did"] for e in events)
    assert 3000 < len(actors) < N and actors.most_common(1)[0][1] > 20


def test_some_createdat_values_are_odd(events: list[dict[str, Any]]) -> None:
    stamps = [
        e["commit"]["record"].get("createdAt", "")
        for e in events
        if "record" in e.get("commit", {})
    ]
    odd = [s for s in stamps if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s)]
    assert 0 < len(odd) < len(stamps) * 0.005


def test_resume_at_any_position_continues_with_exactly_the_next_events(raw: list[bytes]) -> None:
    for k in (1, CHUNK - 1, CHUNK, 2 * CHUNK + 5, 5999):
        source = SyntheticSource(seed=42, rate=0, count=6000, start_us=START_US)
        source.resume(f"42:{START_US}:{k}")
        events, positions = drain(source)
        assert events == raw[k:6000]
        assert positions[-1] == f"42:{START_US}:6000"


def test_count_is_honoured_across_a_resume() -> None:
    first = SyntheticSource(seed=7, rate=0, count=2500, start_us=START_US)
    first.resume(None)
    batches = first.batches(1000, 0.05)
    head = next(batches)
    assert len(head.events) == 1000 and head.position == f"7:{START_US}:1000"
    first.close()
    second = SyntheticSource(seed=7, rate=0, count=2500)
    second.resume(head.position)
    tail, _ = drain(second, max_events=1000)
    assert head.events + tail == generate(7, 2500, START_US)


def test_resume_to_another_start_time_regenerates_from_it(raw: list[bytes]) -> None:
    source = SyntheticSource(seed=42, rate=0, count=100, start_us=START_US)
    assert drain(source)[0] == raw[:100]
    source.resume(f"42:{START_US + 10**9}:0")
    assert drain(source)[0] == generate(42, 100, START_US + 10**9)
    assert drain(source)[0] == []  # exhausted: count counts from index 0


def test_resume_none_starts_now_on_a_whole_second() -> None:
    source = SyntheticSource(seed=1, rate=0, count=1)
    before = time.time()
    source.resume(None)
    seed, start_us, index = source.position.split(":")
    assert (seed, index) == ("1", "0")
    assert int(start_us) % 1_000_000 == 0 and abs(int(start_us) / 1e6 - before) <= 1.5
    (event,) = drain(source)[0]
    assert orjson.loads(event)["time_us"] == int(start_us)


def test_a_position_from_another_seed_or_malformed_is_a_config_error() -> None:
    source = SyntheticSource(seed=42)
    with pytest.raises(ConfigError, match="seed 41"):
        source.resume(f"41:{START_US}:10")
    with pytest.raises(ConfigError, match="seed:start_us:next_index"):
        source.resume("garbage")
    with pytest.raises(ConfigError):
        SyntheticSource(rate=-1)


def test_close_ends_an_endless_iteration() -> None:
    source = SyntheticSource(seed=3, rate=0, start_us=START_US)
    seen = 0
    for batch in source.batches(500, 0.05):
        seen += len(batch.events)
        if seen >= 2000:
            source.close()
    assert seen == 2000


# At 1 event/s a batch of 100 is due after 100 s: an iteration that ends well before that
# was ended by close(), however busy the machine is.
FULL_BATCH_SECONDS = 100


def test_close_from_another_thread_ends_a_paced_iteration_promptly() -> None:
    source = SyntheticSource(seed=3, rate=1, start_us=START_US)
    threading.Timer(0.2, source.close).start()
    began = time.monotonic()
    batches = list(source.batches(100, 3600.0))
    assert time.monotonic() - began < FULL_BATCH_SECONDS / 2
    assert sum(len(b.events) for b in batches) <= 1


def test_close_from_a_signal_handler_ends_a_paced_iteration_promptly() -> None:
    source = SyntheticSource(seed=3, rate=1, start_us=START_US)
    previous = signal.signal(signal.SIGALRM, lambda *_: source.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        began = time.monotonic()
        batches = list(source.batches(100, 3600.0))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - began < FULL_BATCH_SECONDS / 2
    assert sum(len(b.events) for b in batches) <= 1


def test_pacing_never_runs_ahead_of_the_rate() -> None:
    """At most rate x elapsed events at any moment; a busy machine can only be slower,
    which the pace then makes up in full batches."""
    source = SyntheticSource(seed=5, rate=2000, start_us=START_US)
    seen, began = 0, time.monotonic()
    for batch in source.batches(100, 0.02):
        seen += len(batch.events)
        assert seen <= (time.monotonic() - began) * 2000
        if seen >= 1000:
            source.close()
    assert seen >= 1000


def test_a_slow_rate_yields_empty_batches_after_the_linger() -> None:
    source = SyntheticSource(seed=5, rate=0.5, start_us=START_US)
    batches = source.batches(100, 0.05)
    first = next(batches)
    source.close()
    assert first.events == [] and first.position == f"5:{START_US}:0"
