"""Stream IDs in order: ``ms-seq`` compared as numbers, in Python and in Lua."""

from __future__ import annotations


def id_key(stream_id: str) -> tuple[int, int]:
    """A stream ID as a sortable (ms, seq) pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


ID_LESS_LUA = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
"""
"""``less(a, b)`` of two stream IDs, pasted into the Lua scripts that need it."""
