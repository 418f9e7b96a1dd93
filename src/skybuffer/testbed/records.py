"""The realistic record shapes: what each kind of event looks like, and how often.

Mix (``MIX``): likes 69 %, posts 12 %, reposts 10 %, follows 6 %, blocks 1 %, other 2 %
(profile updates, list items, threadgates, fm.teal plays, identity, account). Deletes are
2.6 % of all events and carry no record and no cid; updates are 1.3 %. Sizes: likes
~530 B (17 % carry ``via``), reposts ~570 B (40 % ``via``), post creates ~805 B (30 %
replies, 44 % embeds, 26 % facets, 7 languages, emoji in 30 %), follows/blocks ~395 B,
deletes ~200 B. Likes, reposts, follows and blocks are formatted directly (the hot types);
the rest are dicts that orjson serialises.
"""

from __future__ import annotations

import random
import uuid
from bisect import bisect_right
from collections.abc import Callable

from skybuffer.testbed.atproto import (
    BLOB_CID,
    BLOCK,
    DAY_US,
    FOLLOW,
    LIKE,
    LISTITEM,
    POST,
    PROFILE,
    REPOST,
    Event,
    b32,
    commit_event,
    iso,
    make_cid,
    tid,
)
from skybuffer.testbed.population import Population

Builder = Callable[[Population, random.Random, str, int, str], "Event | bytes"]


def _subject_create(coll: str, via_share: float) -> Builder:
    """Likes and reposts: a pooled post as subject, sometimes the repost it came through."""

    def build(f: Population, rng: random.Random, did: str, t: int, cid: str) -> bytes:
        created, c_us = f.created(rng, t)
        subject = f.ref_json(rng, t, f.posts)
        via = f',"via":{f.ref_json(rng, t, f.reposts)}' if rng.random() < via_share else ""
        record = f'{{"$type":"{coll}","createdAt":"{created}","subject":{subject}{via}}}'
        return f.create_json(rng, did, t, coll, c_us, record, cid)

    return build


def _graph_create(coll: str) -> Builder:
    """Follows, blocks: the subject is a DID, popular accounts most often."""

    def build(f: Population, rng: random.Random, did: str, t: int, cid: str) -> bytes:
        created, c_us = f.created(rng, t)
        record = f'{{"$type":"{coll}","createdAt":"{created}","subject":"{f.target(rng)}"}}'
        return f.create_json(rng, did, t, coll, c_us, record, cid)

    return build


def _delete(coll: str) -> Builder:
    """Deletes name only the rkey of a record made up to a month ago: no record, no cid."""

    def build(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
        clock = rng.getrandbits(10)
        made = t - 60_000_000 - int(rng.random() ** 2 * 30 * DAY_US)
        return commit_event(
            did, t, tid(t - 20_000, clock), "delete", coll, tid(made, clock), None, cid
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


def _facet(f: Population, rng: random.Random, text: str) -> tuple[str, list[Event]]:
    """Append a mention, link or tag and point at it with UTF-8 byte offsets."""
    u = rng.random()
    if u < 0.10:
        did = f.target(rng)
        piece, feature = (
            f"@{rng.choice(_NAMES)}{did[-4:]}.bsky.social",
            {"$type": _FACET + "mention", "did": did},
        )
    elif u < 0.20:
        uri = f"https://{rng.choice(_DOMAINS)}/{b32(rng.randbytes(10))}"
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
    link = {"$link": make_cid(BLOB_CID, rng.randbytes(52))}
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
    external["uri"] = f"https://{rng.choice(_DOMAINS)}/{b32(rng.randbytes(15))}"
    return {"$type": "app.bsky.embed.external", "external": external}


def _embed(f: Population, rng: random.Random, t: int) -> Event | None:
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


def _post(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
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


def _profile(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
    name = f"{rng.choice(_NAMES).title()} {rng.choice(_EMOJI)}"
    record: Event = {"$type": PROFILE, "avatar": _blob(rng), "banner": _blob(rng)}
    record |= {"createdAt": iso(t - 90 * DAY_US), "description": _text(rng, "en")[:200]}
    record["displayName"] = name
    if rng.random() < 0.5:
        record["pinnedPost"] = f.ref(rng, t)
    rev = tid(t - 20_000, rng.getrandbits(10))
    return commit_event(did, t, rev, "update", PROFILE, "self", record, cid)


def _listitem(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
    created, c_us = f.created(rng, t)
    list_uri = f"at://{did}/app.bsky.graph.list/{tid(t - 30 * DAY_US, 7)}"
    record = {"$type": LISTITEM, "createdAt": created, "list": list_uri, "subject": f.target(rng)}
    return f.create(rng, did, t, LISTITEM, c_us, record, cid)


def _threadgate(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
    """Written with its post, so it shares the post's rkey."""
    coll, (created, c_us) = "app.bsky.feed.threadgate", f.created(rng, t)
    event = f.create(rng, did, t, coll, c_us, {}, cid)
    rkey = event["commit"]["rkey"]
    allow = [{"$type": coll + "#mentionRule"}, {"$type": coll + "#followingRule"}]
    record = {"$type": coll, "allow": allow[: rng.randint(0, 2)], "createdAt": created}
    event["commit"]["record"] = record | {"hiddenReplies": [], "post": f"at://{did}/{POST}/{rkey}"}
    return event


def _teal_play(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
    coll, (created, c_us) = "fm.teal.alpha.feed.play", f.created(rng, t)
    artist = {"artistMbId": str(uuid.UUID(int=rng.getrandbits(128))), "artistName": "Björk"}
    record: Event = {"$type": coll, "artists": [artist], "duration": rng.randint(120, 420)}
    record |= {"musicServiceBaseDomain": "spotify.com", "playedTime": created}
    record |= {"submissionClientAgent": "piper/v0.0.1", "trackName": "Hidden Place"}
    return f.create(rng, did, t, coll, c_us, record, cid)


def _identity(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
    body: Event = {"did": did}
    if rng.random() < 0.5:
        body["handle"] = f"{rng.choice(_NAMES)}{did[-5:]}.bsky.social"
    body |= {"seq": t // 58_660, "time": iso(t - 300_000)}  # a relay seq, roughly as in 2026
    return {"did": did, "time_us": t, "kind": "identity", "identity": body}


def _account(f: Population, rng: random.Random, did: str, t: int, cid: str) -> Event:
    body: Event = {"active": rng.random() < 0.8, "did": did, "seq": t // 58_660}
    if not body["active"]:
        body["status"] = rng.choice(["deactivated", "takendown", "deleted"])
    body["time"] = iso(t - 300_000)
    return {"did": did, "time_us": t, "kind": "account", "account": body}


KINDS: list[tuple[float, str, Builder]] = [
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
BUILDERS = [build for _, _, build in KINDS]
CUMULATIVE = [sum(share for share, _, _ in KINDS[: i + 1]) for i in range(len(KINDS) - 1)]
MIX: dict[str, float] = {
    kind: round(sum(share for share, name, _ in KINDS if name == kind), 6) for _, kind, _ in KINDS
}
"""Expected share of each skybuffer type (the lake's top-level folders)."""
DELETE_SHARE, UPDATE_SHARE = 0.026, 0.013
