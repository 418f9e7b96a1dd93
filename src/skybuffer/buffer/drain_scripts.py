"""The Lua scripts of the DataWriter's side of the streams (buffer/consumer.py says what
each guarantees): the atomic commit, the group's creation and the safe trim. Each
declares ``allow-oom``: they are what frees memory when Redis is full.
"""

from __future__ import annotations

from skybuffer.buffer.deadletter import ADD_LETTER_LUA, LETTER_FIELDS, WHOLE_ENTRY
from skybuffer.buffer.lease import FENCE_LUA
from skybuffer.buffer.stream_ids import ID_LESS_LUA
from skybuffer.constants import FIELD_DATA, FIELD_VERSION

# KEYS: stream, event-count hash, dead-letter stream, writer lease, committed-IDs hash,
# dead-letter counts. ARGV: group, type, lease token ('' unleased), lease ttl ms, the last
# ID this type committed by the lake's own record ('' unknown), then per entry: id, events,
# k, and k dead letters of six values each (buffer/deadletter.py).
# allow-oom, because committing is what frees memory at maxmemory. The dead letters it
# adds do not undo that: each replaces the entry it came from, deleted in the same call,
# and is a bundle of some of that entry's events, encoded as the entry was (no larger). A
# letter of a whole entry (codec WHOLE_ENTRY) is copied from the entry here, so a flood of
# bad entries sends no bytes and holds one entry at a time.
COMMIT_SCRIPT = (
    "#!lua flags=allow-oom\n"
    + FENCE_LUA
    + ID_LESS_LUA
    + ADD_LETTER_LUA
    + """
local function entry_fields(stream, id)
  local found = redis.call('XRANGE', stream, id, id)
  local fields = {}
  if #found == 1 then
    local pairs_ = found[1][2]
    for j = 1, #pairs_, 2 do fields[pairs_[j]] = pairs_[j + 1] end
  end
  return fields
end
local stream, counts, deadletter, lease, committed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local letter_counts = KEYS[6]
local group, type_, token, ttl, lake_last = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if token ~= '' and not fence(lease, token, ttl) then
  return redis.error_reply('FENCED this DataWriter no longer holds ' .. lease)
end
local last = redis.call('HGET', committed, type_) or '0-0'
if lake_last ~= '' and less(last, lake_last) then
  return redis.error_reply('FORGOT ' .. last)
end
if token ~= '' then
  -- The lease holder is the only writer: an entry it read that holds events and is gone
  -- was lost by Redis (a restart without its last writes since the read), not committed.
  local j = 6
  while j <= #ARGV do
    if tonumber(ARGV[j + 1]) > 0 and #redis.call('XRANGE', stream, ARGV[j], ARGV[j]) == 0 then
      return redis.error_reply('GONE ' .. ARGV[j])
    end
    j = j + 3 + tonumber(ARGV[j + 2]) * @letter_fields
  end
end
local i, entries, removed, letters, top = 6, 0, 0, 0, last
while i <= #ARGV do
  local id, events, k = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local stored = nil
  if k > 0 then stored = entry_fields(stream, id) end
  redis.call('XACK', stream, group, id)
  local deleted = redis.call('XDEL', stream, id) == 1
  if deleted then
    entries = entries + 1
    removed = removed + events
  end
  if less(top, id) then top = id end
  for _ = 1, k do
    if deleted then
      if ARGV[i + 4] == '@whole' then
        ARGV[i + 2], ARGV[i + 4] = stored['@data'] or '', stored['@version'] or 'unknown'
      end
      add_letter(deadletter, letter_counts, ARGV, i)
      letters = letters + tonumber(ARGV[i + 5])
    end
    i = i + @letter_fields
  end
end
if removed ~= 0 then redis.call('HINCRBY', counts, type_, -removed) end
if top ~= last then redis.call('HSET', committed, type_, top) end
return {entries, removed, letters}
"""
)
for _token, _value in (
    ("@letter_fields", str(LETTER_FIELDS)),
    ("@whole", WHOLE_ENTRY.decode()),
    ("@data", FIELD_DATA.decode()),
    ("@version", FIELD_VERSION.decode()),
):
    COMMIT_SCRIPT = COMMIT_SCRIPT.replace(_token, _value)

# KEYS: stream. ARGV: group. XGROUP CREATE is denyoom: a writer meeting a full Redis
# for the first time must still be able to create its group, or it could never drain it.
GROUP_SCRIPT = """#!lua flags=allow-oom
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if ok then return 1 end
local message = type(err) == 'table' and err.err or tostring(err)
if string.find(message, 'BUSYGROUP', 1, true) then return 0 end
return redis.error_reply(message)
"""

# KEYS: stream. Trims below the oldest entry any group still needs: its oldest pending
# entry, or else the first entry after its last-delivered ID.
TRIM_SCRIPT = (
    "#!lua flags=allow-oom\n"
    + ID_LESS_LUA
    + """
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then return 0 end
local minid = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for j = 1, #group, 2 do info[group[j]] = group[j + 1] end
  local summary = redis.call('XPENDING', stream, info['name'])
  local needed = info['last-delivered-id']
  if summary[1] > 0 then
    needed = summary[2]
  else
    local after = redis.call('XRANGE', stream, '(' .. needed, '+', 'COUNT', 1)
    if #after > 0 then needed = after[1][1] end
  end
  if minid == nil or less(needed, minid) then minid = needed end
end
if minid == nil then return 0 end
return redis.call('XTRIM', stream, 'MINID', minid)
"""
)
