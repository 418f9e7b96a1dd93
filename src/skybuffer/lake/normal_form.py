"""DuckDB's normal form of JSON values, and the cheap proofs that a value is in it.

``record_json`` and ``payload_json`` are what DuckDB writes back for the record or payload
(yyjson): minified, characters instead of ``\\u`` escapes (control characters in
upper-case hex), numbers with a fraction or an exponent rewritten. A value already in
that form is kept as the bytes that were sent; anything else is left to DuckDB
(``NotHere``). Per chunk, RE2 looks for escapes and non-integer numbers (``plain``); per
entry, msgspec checks that the lines are minified (``whole``); entries that fail either
are checked value by value (``normal_text``).
"""

from __future__ import annotations

import functools

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from skybuffer.lake.shapes import EVENTS, Event


class NotHere(Exception):
    """This line's row is not provably DuckDB's here: DuckDB converts it."""


def normal_text(raw: bytes) -> str:
    """``raw`` as text when it is already what DuckDB re-serialises a JSON value to:
    minified, keys unrepeated (orjson's round trip gives it back), no ``\\u`` escape
    (DuckDB writes the characters, and control characters in upper-case hex), and no
    number with an exponent (which DuckDB writes otherwise than orjson; the atproto data
    model has no floats at all)."""
    if raw[:1] != b"{" or b"\\u" in raw or has_exponent(raw):
        raise NotHere
    try:
        if orjson.dumps(orjson.loads(raw)) != raw:
            raise NotHere
    except orjson.JSONDecodeError:
        raise NotHere from None
    return raw.decode()


def has_exponent(raw: bytes) -> bool:
    """A digit, ``e+`` or ``e-``, a digit (orjson always signs exponents; a string that
    holds the same costs only the fallback)."""
    for sign in (b"e+", b"e-"):
        at = raw.find(sign)
        while at > 0:
            if raw[at - 1 : at].isdigit() and raw[at + 2 : at + 3].isdigit():
                return True
            at = raw.find(sign, at + 2)
    return False


def plain(payloads: list[bytes]) -> list[bool]:
    """Per entry: holds no ``\\u`` escape and no number with a fraction or an exponent
    (what ``normal`` looks for), by RE2 over the chunk at once (a number is followed by
    ``,`` ``}`` or ``]``, so dates and hashes do not match; a string that holds such a
    pattern only sends its entry down the line-by-line path)."""
    column = pa.array(payloads, pa.binary())
    odd = [pc.match_substring_regex(column, pattern) for pattern in ODD]
    return [not x for x in functools.reduce(pc.or_, odd).to_pylist()]


ODD = (r"\\u", r"\.[0-9]+[eE,}\]]", r"e[-+]?[0-9]+[,}\]]", r"E[-+]?[0-9]+[,}\]]")


def whole(payload: bytes) -> list[Event] | None:
    """The entry's events in one decode, if the entry is minified JSON lines (``plain``
    has checked the rest of the normal form, ``text`` checks each value's UTF-8)."""
    array = b"[" + payload.replace(b"\n", b",") + b"]"
    try:
        if msgspec.json.format(array, indent=-1) != array:
            return None
        return EVENTS.decode(array)
    except msgspec.DecodeError:
        return None


def value_text(raw: bytes, normal: bool) -> str:
    """A record or payload as DuckDB writes it back (``normal``: the entry was checked)."""
    if not normal:
        return normal_text(raw)
    if raw[:1] != b"{":
        raise NotHere
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise NotHere from None


def utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True
