"""The JSON shapes the DataWriter's conversion decodes (msgspec structs), and each
record type's typed columns (lake/schema.py's ``COLUMNS``, in order).

The envelope and the commit are strict (an unknown key fails the decode: its line has
``extra_json``, which DuckDB computes); records are lenient (only the keys that have
columns are decoded). Values are typed as DuckDB's columns are: a value of another JSON
type fails the decode, and DuckDB converts that line. ``gc=False``: structs hold no
cycles, and untracked objects keep the cycle collector out of the hot loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

Raw = msgspec.Raw


class Commit(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    rev: str
    operation: str
    collection: str
    rkey: str
    record: Raw = msgspec.field(default_factory=Raw)
    cid: str | None = None


class Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    did: str
    time_us: int
    kind: str
    commit: Commit | None = None
    identity: Raw = msgspec.field(default_factory=Raw)
    account: Raw = msgspec.field(default_factory=Raw)


class Ref(msgspec.Struct, gc=False):
    uri: str | None = None
    cid: str | None = None


class EmbedRecord(msgspec.Struct, gc=False):
    uri: str | None = None
    cid: str | None = None
    record: Ref | None = None


class Embed(msgspec.Struct, gc=False):
    type: str | None = msgspec.field(default=None, name="$type")
    record: EmbedRecord | None = None


class Reply(msgspec.Struct, gc=False):
    root: Ref | None = None
    parent: Ref | None = None


class Post(msgspec.Struct, gc=False):
    createdAt: str | None = None  # noqa: N815 - the lexicon's name
    text: str | None = None
    langs: list[str] | None = None
    reply: Reply | None = None
    embed: Embed | None = None


class Subject(msgspec.Struct, gc=False):
    createdAt: str | None = None  # noqa: N815
    subject: Ref | None = None
    via: Ref | None = None


class Graph(msgspec.Struct, gc=False):
    createdAt: str | None = None  # noqa: N815
    subject: str | None = None


class Other(msgspec.Struct, gc=False):
    createdAt: str | None = None  # noqa: N815
    type: str | None = msgspec.field(default=None, name="$type")


class Payload(msgspec.Struct, gc=False):
    handle: str | None = None
    seq: int | None = None
    time: str | None = None
    active: bool | None = None
    status: str | None = None


NONE_REF = Ref()
EVENT = msgspec.json.Decoder(Event)
EVENTS = msgspec.json.Decoder(list[Event])
PAYLOAD = msgspec.json.Decoder(Payload)
INT64_MAX = 2**63 - 1


def post_columns(r: Post) -> tuple[Any, ...]:
    reply = r.reply or Reply()
    root, parent = reply.root or NONE_REF, reply.parent or NONE_REF
    embed = r.embed or Embed()
    rec = embed.record
    quoted = rec.record.uri if rec is not None and rec.record is not None else None
    if quoted is None and rec is not None:
        quoted = rec.uri
    return (r.text, r.langs, root.uri, root.cid, parent.uri, parent.cid, embed.type, quoted)


def subject_columns(r: Subject) -> tuple[Any, ...]:
    subject, via = r.subject or NONE_REF, r.via or NONE_REF
    return (subject.uri, subject.cid, via.uri, via.cid)


def graph_columns(r: Graph) -> tuple[Any, ...]:
    return (r.subject,)


def other_columns(r: Other) -> tuple[Any, ...]:
    return (r.type, None, None, None, None, None, None)


RECORDS: dict[str, tuple[type, Callable[[Any], tuple[Any, ...]]]] = {
    "posts": (Post, post_columns),
    "likes": (Subject, subject_columns),
    "reposts": (Subject, subject_columns),
    "follows": (Graph, graph_columns),
    "blocks": (Graph, graph_columns),
    "other": (Other, other_columns),
}
