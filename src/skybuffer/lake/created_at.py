"""``created_at_ts``: a record's ``createdAt`` as DuckDB's ``TRY_CAST(... AS TIMESTAMPTZ)``
gives it, without DuckDB for the forms clients write.

``createdAt`` is set by clients and can be anything. The Bluesky app's form
(``2026-05-25T14:23:28.757Z``) is parsed by Arrow's cast, a column at a time; the other
ISO 8601 forms seen on the network (a bare date, no fraction or another number of digits,
which DuckDB truncates to microseconds, a ``±HH:MM`` offset, no zone: UTC) are parsed
here, a value at a time; anything else (other separators, leap seconds, hour 24, year
0, ...) is left to DuckDB through ``resolve``, so the values are DuckDB's whatever comes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from skybuffer.lake.schema import INT64, UTC_US

APP_FORM = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$"
_ISO = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?)?")
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_US = 1_000_000


def created_at_column(
    table: pa.Table, resolve: Callable[[list[str]], list[int | None]]
) -> pa.Table:
    """``table`` with ``created_at_ts`` computed from ``created_at``; ``resolve`` gives
    DuckDB's values (µs since the epoch) of the strings not parsed here."""
    created = table["created_at"].combine_chunks()
    if created.null_count == len(created):
        return table
    app = pc.fill_null(pc.match_substring_regex(created, APP_FORM), False)
    try:
        parsed = pc.if_else(app, created, pa.scalar(None, pa.string())).cast(UTC_US)
    except pa.ArrowInvalid:  # a day the month does not have: every value one by one
        app = pa.array([False] * len(created))
        parsed = pa.nulls(len(created), UTC_US)
    rest = pc.and_(pc.invert(app), pc.is_valid(created))
    if pc.any(rest).as_py():
        values = pc.filter(created, rest).to_pylist()
        micros = _parse_all(values, resolve)
        parsed = pc.replace_with_mask(parsed, rest, pa.array(micros, INT64).cast(UTC_US))
    index = table.schema.get_field_index("created_at_ts")
    return table.set_column(index, table.schema.field(index), parsed)


def _parse_all(
    values: list[str], resolve: Callable[[list[str]], list[int | None]]
) -> list[int | None]:
    micros: list[int | None] = [_parse(v) for v in values]
    unknown = [i for i, m in enumerate(micros) if m == _UNKNOWN]
    if unknown:
        for i, us in zip(unknown, resolve([values[i] for i in unknown]), strict=True):
            micros[i] = us
    return micros


_UNKNOWN: int = -(2**63)
"""Not decided here: DuckDB decides."""


def _parse(value: str) -> int:
    """µs since the epoch of an ISO 8601 value of the forms above, else ``_UNKNOWN``."""
    match = _ISO.fullmatch(value)
    if match is None:
        return _UNKNOWN
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    except ValueError:
        return _UNKNOWN
    seconds = 0
    if hour is not None:
        h, m, s = int(hour), int(minute), int(second)
        if h > 23 or m > 59 or s > 59:
            return _UNKNOWN
        seconds = h * 3600 + m * 60 + s
    offset = 0
    if zone is not None and zone != "Z":
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 23 or om > 59:
            return _UNKNOWN
        offset = (oh * 3600 + om * 60) * (1 if zone[0] == "+" else -1)
    micro = int((fraction or "")[:6].ljust(6, "0"))
    return (days * 86400 + seconds - offset) * _US + micro
