"""Synthetic Jetstream v1 events: deterministic, seekable, and calibrated on real traffic.

Benchmarks, chaos tests and the laptop demo need a source that behaves like the network
(same shapes, sizes, type mix and repetition, so compression and Parquet figures mean
something) without a network, and that replays byte for byte from a cursor.

Calibration (research/bluesky-jetstream.md §1.2, §3.2, §3.3 and golden_v1.jsonl):

* Mix (``MIX``): likes 69 %, posts 12 %, reposts 10 %, follows 6 %, blocks 1 %, other 2 %
  (profile updates, list items, threadgates, fm.teal plays, identity, account). Deletes
  are 2.6 % of all events and carry no record and no cid; updates are 1.3 %.
* Sizes: likes ~530 B (17 % carry ``via``), reposts ~570 B (40 % ``via``), post creates
  ~805 B (30 % replies, 44 % embeds, 26 % facets, 7 languages, emoji in 30 %; texts skewed
  short, median ~100 and at most ~270 code points), follows/blocks ~395 B, deletes ~200 B;
  ~550 B overall.
* Popularity: 200k actors; who acts is Zipf-like, P(rank r) ∝ 1/(r + 50), so heavy users
  repeat. Liked, reposted, quoted and replied-to posts come from a pool of 50k posts per
  hour of ``time_us`` with P ∝ 1/(r + 5): the top post collects ~2 % of the hour's likes,
  and every like of it carries the identical subject uri + cid, as on the network. ``via``
  points into a pool of reposts built the same way. Follows, blocks and mentions target
  accounts with P ∝ 1/(r + 20). About 0.2 % of the actors are did:web.
* Time: event i has ``time_us = start_us + i * step_us``, ``step_us = round(1e6 / rate)``
  (rate 1500/s when unpaced); ``createdAt`` is 0.1-3.1 s earlier (the client's clock) and
  0.1 % of the values are odd (year 1, offsets, nanoseconds, a bare date).

Determinism and seeking: events are made in chunks of 1024, and chunk c draws only from
``random.Random(f"{seed}:{c}")``. Actors and pooled posts are pure functions of
(seed, rank) and (seed, hour, rank) via blake2b, held in bounded memos, so any event can be
regenerated without its predecessors and memory stays flat in an endless run.

Speed, one core of the 2-core dev VM: ~160k events/s while the memos fill (first ~200k
events), ~190k/s over millions. Cids are one ``randbytes`` block per chunk mapped to base32
by ``bytes.translate``; TIDs and timestamps come from memoised prefixes; likes, reposts,
follows and blocks are formatted directly; the rest goes through orjson.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from base64 import b32encode
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from skybuffer.errors import ConfigError
from skybuffer.sources.base import SourceBatch

Event = dict[str, Any]
Builder = Callable[["_Factory", random.Random, str, int, str], "Event | bytes"]

CHUNK = 1024
DEFAULT_RATE = 1500.0
ACTORS, ACTOR_SKEW = 200_000, 50
POOL, POOL_SKEW, TARGET_SKEW = 50_000, 5, 20
HOUR_US, DAY_US = 3_600_000_000, 86_400_000_000
_MEMO_MAX = 120_000  # entries per memo (<= ~30 MB each), then it starts over
_MAX_NAP = 0.05  # longest sleep while pacing, so lingers and close() stay prompt

LIKE, POST, REPOST = "app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.feed.repost"
FOLLOW, BLOCK = "app.bsky.graph.follow", "app.bsky.graph.block"
LISTITEM, PROFILE = "app.bsky.graph.listitem", "app.bsky.actor.profile"
RECORD_CID, BLOB_CID = "bafyrei", "bafkrei"  # CIDv1 dag-cbor / raw, sha2-256, base32

# base32 with one random byte per char: bytes.translate runs in C, while base64.b32encode
# is a Python loop on 3.11. Head and tail tables keep cids canonical: after the codec
# header the first char holds 3 digest bits, and the last one ends in 2 zero bits.
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
_B32 = bytes(_ALPHABET[b & 31] for b in range(256))
_CID_HEAD = bytes(_ALPHABET[b & 7] for b in range(256))
_CID_TAIL = bytes(_ALPHABET[(b & 7) * 4] for b in range(256))
_TO_SORTABLE = bytes.maketrans(_ALPHABET.upper(), b"234567abcdefghijklmnopqrstuvwxyz")
_PAIR = [
    a + b for a in "234567abcdefghijklmnopqrstuvwxyz" for b in "234567abcdefghijklmnopqrstuvwxyz"
]


class _Memo(dict[int, str]):
    """A bounded memo of pure values: a miss computes, a full memo simply starts over."""

    def __init__(self, make: Callable[[int], str]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: int) -> str:
        if len(self) >= _MEMO_MAX:
            self.clear()
        value = self[key] = self._make(key)
        return value


def _b32(raw: bytes) -> str:
    return raw.translate(_B32).decode("ascii")


def _cid(prefix: str, raw: bytes) -> str:
    """A canonical CID string from 52 random bytes (7 + 52 chars, like atproto's)."""
    body = bytearray(raw[:52].translate(_B32))
    body[0], body[51] = _CID_HEAD[raw[0]], _CID_TAIL[raw[51]]
    return prefix + body.decode("ascii")


def _cid_block(rng: random.Random) -> str:
    """The 52-char cid bodies of a whole chunk in three C-level passes (see ``_cid``)."""
    raw = rng.randbytes(52 * CHUNK)
    body = bytearray(raw.translate(_B32))
    body[0::52] = raw[0::52].translate(_CID_HEAD)
    body[51::52] = raw[51::52].translate(_CID_TAIL)
    return body.decode("ascii")


_TID_HEADS = _Memo(
    lambda high: b32encode((high << 37).to_bytes(9)).translate(_TO_SORTABLE)[:7].decode()
)
_SECONDS = _Memo(lambda second: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def _tid(us: int, clock: int) -> str:
    """atproto TID (53-bit µs + 10-bit clock id, 13 base32-sortable chars); the first 7
    chars change every ~1.05 s, so they are memoised."""
    return _TID_HEADS[us >> 20] + _PAIR[(us >> 10) & 1023] + _PAIR[us & 1023] + _PAIR[clock]


def _iso(us: int) -> str:
    """ISO 8601 UTC with milliseconds, as the Bluesky app writes createdAt."""
    return _SECONDS[us // 1_000_000] + _MILLIS[us // 1000 % 1000]


def _odd_time(rng: random.Random, us: int) -> str:
    """What some clients put in createdAt; downstream must survive it."""
    second = _SECONDS[us // 1_000_000]
    return rng.choice(
        ["0001-01-01T00:00:00Z", f"{second}+09:00", f"{second}.123456789Z", second[:10]]
    )


def _zipf(u: float, base: float, skew: int) -> int:
    """Rank r >= 0 with P(r) ∝ 1/(r + skew) by inverting the continuous law: O(1), no table.

    ``base`` is (n + skew) / skew for a population of n (r = n only by float rounding,
    and is then one more valid identity).
    """
    return int(skew * base**u) - skew


_ACTOR_BASE = (ACTORS + ACTOR_SKEW) / ACTOR_SKEW
_TARGET_BASE = (ACTORS + TARGET_SKEW) / TARGET_SKEW
_POOL_BASE = (POOL + POOL_SKEW) / POOL_SKEW


class _Factory:
    """Builds the events of one seed; all it memoises is a pure function of the seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.dids = _Memo(self._did)
        self.posts = _Memo(lambda key: self._pooled(POST, key))
        self.reposts = _Memo(lambda key: self._pooled(REPOST, key))

    def chunk(self, index: int, start_us: int, step_us: int) -> list[bytes]:
        """Events index*CHUNK .. index*CHUNK+1023, independent of every other chunk."""
        rng = random.Random(f"{self.seed}:{index}")
        draw, dids, cids = rng.random, self.dids, _cid_block(rng)
        first_t = start_us + index * CHUNK * step_us
        out: list[bytes] = []
        for k in range(CHUNK):
            build = _BUILDERS[bisect_right(_CUMULATIVE, draw())]
            did = dids[int(ACTOR_SKEW * _ACTOR_BASE ** draw()) - ACTOR_SKEW]  # _zipf inlined
            event = build(
                self, rng, did, first_t + k * step_us, RECORD_CID + cids[52 * k : 52 * k + 52]
            )
            # Copying orjson's output is ~7x faster than keeping it when many are kept
            # (orjson 3.13): its oversized buffers would otherwise keep growing the heap.
            out.append(event if type(event) is bytes else bytes(memoryview(orjson.dumps(event))))
        return out

    def _did(self, rank: int) -> str:
        digest = _b32(hashlib.blake2b(f"{self.seed}/did/{rank}".encode(), digest_size=24).digest())
        return f"did:web:{digest[:10]}.net" if rank % 499 == 7 else "did:plc:" + digest

    def target(self, rng: random.Random) -> str:
        return self.dids[_zipf(rng.random(), _TARGET_BASE, TARGET_SKEW)]

    def ref(self, rng: random.Random, t: int) -> orjson.Fragment:
        """A pooled post strongRef for dict records (orjson embeds the memoised JSON)."""
        return orjson.Fragment(self.ref_json(rng, t, self.posts))

    @staticmethod
    def ref_json(rng: random.Random, t: int, pool: _Memo) -> str:
        """A strongRef into this hour's pool: popular entries repeat with identical bytes."""
        return pool[(t // HOUR_US) << 20 | _zipf(rng.random(), _POOL_BASE, POOL_SKEW)]

    def _pooled(self, collection: str, key: int) -> str:
        hour, rank = key >> 20, key & 0xFFFFF
        seed = f"{self.seed}/{collection}/{hour}/{rank}".encode()
        digest = hashlib.blake2b(seed, digest_size=64).digest()
        author = self.dids[_zipf(int.from_bytes(digest[52:60]) / 2**64, _ACTOR_BASE, ACTOR_SKEW)]
        age = int((digest[60] / 256) ** 2 * 2 * DAY_US) + digest[61] * 1000
        rkey = _tid(hour * HOUR_US - age, digest[62] * 4)
        return f'{{"cid":"{_cid(RECORD_CID, digest)}","uri":"at://{author}/{collection}/{rkey}"}}'

    @staticmethod
    def created(rng: random.Random, t: int) -> tuple[str, int]:
        """createdAt: the client's clock, a little before Jetstream saw the commit."""
        c_us = t - 100_000 - int(rng.random() ** 3 * 3_000_000)
        return (_odd_time(rng, c_us) if rng.random() < 0.001 else _iso(c_us)), c_us

    @staticmethod
    def create(
        rng: random.Random, did: str, t: int, coll: str, c_us: int, record: Event, cid: str
    ) -> Event:
        clock = rng.getrandbits(10)
        return _commit(
            did, t, _tid(t - 20_000, clock), "create", coll, _tid(c_us, clock), record, cid
        )

    @staticmethod
    def create_json(
        rng: random.Random, did: str, t: int, coll: str, c_us: int, record: str, cid: str
    ) -> bytes:
        """``create`` for the hot small types, formatted directly (all parts are ASCII)."""
        clock = rng.getrandbits(10)
        return (
            f'{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":'
            f'"{_tid(t - 20_000, clock)}","operation":"create","collection":"{coll}","rkey":'
            f'"{_tid(c_us, clock)}","record":{record},"cid":"{cid}"}}}}'
        ).encode()


def _commit(
    did: str, t: int, rev: str, op: str, coll: str, rkey: str, record: Event | None, cid: str
) -> Event:
    commit: Event = {"rev": rev, "operation": op, "collection": coll, "rkey": rkey}
    if record is not None:
        commit |= {"record": record, "cid": cid}
    return {"did": did, "time_us": t, "kind": "commit", "commit": commit}


def _subject_create(coll: str, via_share: float) -> Builder:
    """Likes and reposts: a pooled post as subject, sometimes the repost it came through."""

    def build(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> bytes:
        created, c_us = f.created(rng, t)
        subject = f.ref_json(rng, t, f.posts)
        via = f',"via":{f.ref_json(rng, t, f.reposts)}' if rng.random() < via_share else ""
        record = f'{{"$type":"{coll}","createdAt":"{created}","subject":{subject}{via}}}'
        return f.create_json(rng, did, t, coll, c_us, record, cid)

    return build


def _graph_create(coll: str) -> Builder:
    """Follows, blocks: the subject is a DID, popular accounts most often."""

    def build(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> bytes:
        created, c_us = f.created(rng, t)
        record = f'{{"$type":"{coll}","createdAt":"{created}","subject":"{f.target(rng)}"}}'
        return f.create_json(rng, did, t, coll, c_us, record, cid)

    return build


def _delete(coll: str) -> Builder:
    """Deletes name only the rkey of a record made up to a month ago: no record, no cid."""

    def build(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
        clock = rng.getrandbits(10)
        made = t - 60_000_000 - int(rng.random() ** 2 * 30 * DAY_US)
        return _commit(
            did, t, _tid(t - 20_000, clock), "delete", coll, _tid(made, clock), None, cid
        )

    return build


_WORDS: dict[str, list[str]] = {
    "en": (
        "the a to and of I you it is this that for in my on just so be not have what like love "
        "today really think people good day time new want know lol gonna art Bluesky coffee "
        "morning game night cat dog thread finally post everyone friends weekend music wow"
    ).split(),
    "ja": (
        "今日は 本当に ありがとう かわいい 猫 ラーメン 食べた 明日 仕事 眠い すごい 。 、 です ね"
    ).split(),
    "pt": "eu você que não muito hoje amor gente bom dia obrigado futebol tá né isso".split(),
    "de": "ich und das ist nicht heute gut mal schon wieder Kaffee danke sehr Zug".split(),
    "es": "que el la de y no hoy muy bien gracias amigo vida todo más casa".split(),
    "fr": "je le la et ne pas très bien merci aujourd'hui ça c'est vraiment chat".split(),
    "ko": "오늘 정말 감사합니다 너무 좋아요 고양이 커피 사랑해 ㅋㅋㅋ 진짜".split(),
}
_LANGS, _LANG_CUMULATIVE = [*_WORDS, ""], [0.55, 0.69, 0.80, 0.85, 0.91, 0.94, 0.97]
_EMOJI = "😂 ❤️ 🥺 ✨ 🔥 👍🏽 🏳️‍🌈 🇧🇷 👨‍👩‍👧 🙏 😭 💀 🎉 ☕ 🦋 💙".split()
_DOMAINS = ["youtube.com", "nytimes.com", "github.com", "theguardian.com", "bsky.app"]
_NAMES = "alice bob jun maria lena omar yuki paulo sara theo".split()
_FACET = "app.bsky.richtext.facet#"


def _text(rng: random.Random, lang: str) -> str:
    """Word salad of skewed length (median ~100 chars), emoji in 30 % of texts."""
    n = 1 + int(rng.random() ** 1.5 * 62)
    text = ("" if lang == "ja" else " ").join(rng.choices(_WORDS[lang or "en"], k=n))
    if rng.random() < 0.3:
        text += " " + "".join(rng.choices(_EMOJI, k=rng.randint(1, 3)))
    return text[:1].upper() + text[1:240]


def _facet(f: _Factory, rng: random.Random, text: str) -> tuple[str, list[Event]]:
    """Append a mention, link or tag and point at it with UTF-8 byte offsets."""
    u = rng.random()
    if u < 0.10:
        did = f.target(rng)
        piece, feature = (
            f"@{rng.choice(_NAMES)}{did[-4:]}.bsky.social",
            {"$type": _FACET + "mention", "did": did},
        )
    elif u < 0.20:
        uri = f"https://{rng.choice(_DOMAINS)}/{_b32(rng.randbytes(10))}"
        piece, feature = uri[8:30] + "...", {"$type": _FACET + "link", "uri": uri}
    elif u < 0.26:
        tag = rng.choice(["art", "photography", "bookstodon", "futebol", "イラスト"])
        piece, feature = "#" + tag, {"$type": _FACET + "tag", "tag": tag}
    else:
        return text, []
    start = len(text.encode()) + 1
    index = {"byteEnd": start + len(piece.encode()), "byteStart": start}
    return f"{text} {piece}", [{"features": [feature], "index": index}]


def _blob(rng: random.Random) -> Event:
    size = int(rng.random() ** 2 * 950_000) + 8_000
    link = {"$link": _cid(BLOB_CID, rng.randbytes(52))}
    return {"$type": "blob", "ref": link, "mimeType": "image/jpeg", "size": size}


def _images(rng: random.Random) -> Event:
    images = []
    for _ in range(1 if rng.random() < 0.75 else rng.randint(2, 4)):
        alt = "" if rng.random() < 0.7 else _text(rng, "en")[:100]
        ratio = {"height": rng.choice([1080, 1350, 2000]), "width": rng.choice([1080, 1440])}
        images.append({"alt": alt, "aspectRatio": ratio, "image": _blob(rng)})
    return {"$type": "app.bsky.embed.images", "images": images}


def _external(rng: random.Random) -> Event:
    external: Event = {"description": _text(rng, "en")[:160]}
    if rng.random() < 0.7:
        external["thumb"] = _blob(rng)
    external["title"] = _text(rng, "en")[:80]
    external["uri"] = f"https://{rng.choice(_DOMAINS)}/{_b32(rng.randbytes(15))}"
    return {"$type": "app.bsky.embed.external", "external": external}


def _embed(f: _Factory, rng: random.Random, t: int) -> Event | None:
    u = rng.random()
    if u < 0.22:
        return _images(rng)
    if u < 0.34:
        return _external(rng)
    if u < 0.44:
        quote = {"$type": "app.bsky.embed.record", "record": f.ref(rng, t)}
        if u < 0.41:
            return quote
        return {"$type": "app.bsky.embed.recordWithMedia", "media": _images(rng), "record": quote}
    return None


def _post(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
    """A post record, keys in the sorted order atproto's CBOR gives them."""
    created, c_us = f.created(rng, t)
    lang = _LANGS[bisect_right(_LANG_CUMULATIVE, rng.random())]
    text, facets = _facet(f, rng, _text(rng, lang))
    record: Event = {"$type": POST, "createdAt": created}
    if (embed := _embed(f, rng, t)) is not None:
        record["embed"] = embed
    if facets:
        record["facets"] = facets
    if lang:
        record["langs"] = [lang] if lang == "en" or rng.random() < 0.9 else [lang, "en"]
    if rng.random() < 0.30:
        root = f.ref(rng, t)
        record["reply"] = {"parent": f.ref(rng, t) if rng.random() < 0.6 else root, "root": root}
    record["text"] = text
    return f.create(rng, did, t, POST, c_us, record, cid)


def _profile(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
    name = f"{rng.choice(_NAMES).title()} {rng.choice(_EMOJI)}"
    record: Event = {"$type": PROFILE, "avatar": _blob(rng), "banner": _blob(rng)}
    record |= {"createdAt": _iso(t - 90 * DAY_US), "description": _text(rng, "en")[:200]}
    record["displayName"] = name
    if rng.random() < 0.5:
        record["pinnedPost"] = f.ref(rng, t)
    rev = _tid(t - 20_000, rng.getrandbits(10))
    return _commit(did, t, rev, "update", PROFILE, "self", record, cid)


def _listitem(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
    created, c_us = f.created(rng, t)
    list_uri = f"at://{did}/app.bsky.graph.list/{_tid(t - 30 * DAY_US, 7)}"
    record = {"$type": LISTITEM, "createdAt": created, "list": list_uri, "subject": f.target(rng)}
    return f.create(rng, did, t, LISTITEM, c_us, record, cid)


def _threadgate(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
    """Written with its post, so it shares the post's rkey."""
    coll, (created, c_us) = "app.bsky.feed.threadgate", f.created(rng, t)
    event = f.create(rng, did, t, coll, c_us, {}, cid)
    rkey = event["commit"]["rkey"]
    allow = [{"$type": coll + "#mentionRule"}, {"$type": coll + "#followingRule"}]
    record = {"$type": coll, "allow": allow[: rng.randint(0, 2)], "createdAt": created}
    event["commit"]["record"] = record | {"hiddenReplies": [], "post": f"at://{did}/{POST}/{rkey}"}
    return event


def _teal_play(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
    coll, (created, c_us) = "fm.teal.alpha.feed.play", f.created(rng, t)
    artist = {"artistMbId": str(uuid.UUID(int=rng.getrandbits(128))), "artistName": "Björk"}
    record: Event = {"$type": coll, "artists": [artist], "duration": rng.randint(120, 420)}
    record |= {"musicServiceBaseDomain": "spotify.com", "playedTime": created}
    record |= {"submissionClientAgent": "piper/v0.0.1", "trackName": "Hidden Place"}
    return f.create(rng, did, t, coll, c_us, record, cid)


def _identity(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
    body: Event = {"did": did}
    if rng.random() < 0.5:
        body["handle"] = f"{rng.choice(_NAMES)}{did[-5:]}.bsky.social"
    body |= {"seq": t // 58_660, "time": _iso(t - 300_000)}  # a relay seq, roughly as in 2026
    return {"did": did, "time_us": t, "kind": "identity", "identity": body}


def _account(f: _Factory, rng: random.Random, did: str, t: int, cid: str) -> Event:
    body: Event = {"active": rng.random() < 0.8, "did": did, "seq": t // 58_660}
    if not body["active"]:
        body["status"] = rng.choice(["deactivated", "takendown", "deleted"])
    body["time"] = _iso(t - 300_000)
    return {"did": did, "time_us": t, "kind": "account", "account": body}


_KINDS: list[tuple[float, str, Builder]] = [
    (0.675, "likes", _subject_create(LIKE, 0.17)),
    (0.015, "likes", _delete(LIKE)),
    (0.116, "posts", _post),
    (0.004, "posts", _delete(POST)),
    (0.097, "reposts", _subject_create(REPOST, 0.40)),
    (0.003, "reposts", _delete(REPOST)),
    (0.057, "follows", _graph_create(FOLLOW)),
    (0.003, "follows", _delete(FOLLOW)),
    (0.0095, "blocks", _graph_create(BLOCK)),
    (0.0005, "blocks", _delete(BLOCK)),
    (0.013, "other", _profile),
    (0.002, "other", _listitem),
    (0.0005, "other", _delete(LISTITEM)),
    (0.001, "other", _threadgate),
    (0.001, "other", _teal_play),
    (0.0015, "other", _identity),
    (0.001, "other", _account),
]
_BUILDERS = [build for _, _, build in _KINDS]
_CUMULATIVE = [sum(share for share, _, _ in _KINDS[: i + 1]) for i in range(len(_KINDS) - 1)]
MIX: dict[str, float] = {
    kind: round(sum(share for share, name, _ in _KINDS if name == kind), 6) for _, kind, _ in _KINDS
}
"""Expected share of each skybuffer type (the lake's top-level folders)."""
DELETE_SHARE, UPDATE_SHARE = 0.026, 0.013


def generate(seed: int, count: int, start_us: int, *, rate: float = DEFAULT_RATE) -> list[bytes]:
    """Events 0..count-1 exactly as ``SyntheticSource(seed, rate, start_us=...)`` yields them."""
    factory, step = _Factory(seed), _step_us(rate)
    chunks = (factory.chunk(index, start_us, step) for index in range(-(-count // CHUNK)))
    return [event for chunk in chunks for event in chunk][:count]


def _step_us(rate: float) -> int:
    return max(1, round(1e6 / (rate if rate > 0 else DEFAULT_RATE)))


class SyntheticSource:
    """Paced, endless or counted synthetic events that resume exactly from a position."""

    name = "synthetic"

    def __init__(
        self,
        seed: int = 42,
        rate: float = DEFAULT_RATE,
        count: int | None = None,
        start_us: int | None = None,
    ) -> None:
        if rate < 0:
            raise ConfigError(f"synthetic rate must be >= 0 events/s (0 = unpaced), got {rate}")
        if count is not None and count < 0:
            raise ConfigError(f"synthetic count must be >= 0 or unset (endless), got {count}")
        self.seed, self.rate, self.count = seed, rate, count
        self._initial_start_us = start_us
        self._factory, self._step = _Factory(seed), _step_us(rate)
        self._start_us: int | None = None
        self._next = 0
        self._chunk: tuple[int, list[bytes]] = (-1, [])
        self._closing = False
        self._wake = threading.Event()

    @property
    def position(self) -> str:
        """Where the next event starts: ``seed:start_us:next_index`` (resolves start_us)."""
        if self._start_us is None:
            self.resume(None)
        return f"{self.seed}:{self._start_us}:{self._next}"

    def resume(self, position: str | None) -> None:
        """Continue after ``position``; None starts at event 0 (now, unless start_us was set).
        Also after ``close``: a rewound source is read again."""
        self._closing = False
        self._wake.clear()
        if position is None:
            start = self._initial_start_us
            self._start_us = start if start is not None else time.time_ns() // 10**9 * 10**6
            self._next, self._chunk = 0, (-1, [])
            return
        try:
            seed, start_us, next_index = (int(part) for part in position.split(":"))
        except ValueError:
            raise ConfigError(
                f"synthetic position {position!r} is not 'seed:start_us:next_index'"
            ) from None
        if seed != self.seed:
            raise ConfigError(
                f"synthetic position {position!r} was made with seed {seed}, not {self.seed}: "
                f"run with seed {seed}, or delete the cursor to start over"
            )
        self._start_us, self._next, self._chunk = start_us, next_index, (-1, [])

    def batches(self, max_events: int, linger_seconds: float) -> Iterator[SourceBatch]:
        """Yield what the pace allows, at most ``max_events`` at a time, until done or closed.

        The pace counts from the first batch, so a consumer that stalls gets the backlog in
        full batches afterwards (like a Jetstream cursor replay), and the long-run average
        is the rate.
        """
        if max_events < 1:
            raise ConfigError(f"max_events must be >= 1, got {max_events}")
        if self._start_us is None:
            self.resume(None)
        began, sent = time.monotonic(), 0
        while not self._closing and self._remaining() > 0:
            due = self._wait_due(began, sent, max_events, linger_seconds)
            if self._closing:
                return
            events = self._take(min(due, max_events, self._remaining()))
            sent += len(events)
            yield SourceBatch(events=events, position=self.position)

    def close(self) -> None:
        """End the iteration at its next step; safe from a signal handler or another thread.

        A handler (always on the main thread) only sets a flag, which the pacing nap sees
        within 50 ms: Event.set there could deadlock on the lock an interrupted Event.wait
        holds. Another thread also wakes the nap at once.
        """
        self._closing = True
        if threading.current_thread() is not threading.main_thread():
            self._wake.set()

    def _remaining(self) -> int:
        return 1 << 62 if self.count is None else self.count - self._next

    def _wait_due(self, began: float, sent: int, max_events: int, linger: float) -> int:
        """Events the pace owes now, waiting until a full batch is due or the linger ends."""
        if self.rate <= 0:
            return max_events
        deadline = time.monotonic() + linger
        while True:
            now = time.monotonic()
            due = int((now - began) * self.rate) - sent
            if due >= max_events or now >= deadline or self._closing:
                return max(due, 0)
            self._wake.wait(min(_MAX_NAP, (max_events - due) / self.rate, deadline - now))

    def _take(self, n: int) -> list[bytes]:
        """The next ``n`` events, regenerating a chunk only when the index enters it."""
        assert self._start_us is not None
        out: list[bytes] = []
        while len(out) < n:
            index, offset = divmod(self._next, CHUNK)
            if self._chunk[0] != index:
                self._chunk = (index, self._factory.chunk(index, self._start_us, self._step))
            piece = self._chunk[1][offset : offset + n - len(out)]
            out += piece
            self._next += len(piece)
        return out
