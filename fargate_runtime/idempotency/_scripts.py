"""The Lua scripts that are the only writers of idempotency records in Redis, and their replies.

A record is one string with a server-side TTL (``PX``): the lease while in progress, the
retention once completed. Its layout is binary-safe and cheap to parse in Lua::

    p<token>:<fingerprint length>:<fingerprint><owner>     in progress
    c<token>:<fingerprint length>:<fingerprint><result>    completed

One string (not a hash) keeps a write to one command with its TTL (``SET ... PX``), where a
hash needs ``HSET`` then ``PEXPIRE``; inside a script every ``redis.call`` is what costs.
Each script handles a whole batch of keys of one hash slot, and Redis runs a script atomically,
so classification and write are one step. Replies and integer arguments are kept compact
(joined words, one-character flags): each reply element costs the client a parse in Python.
Needs Redis >= 5 (script effects replication, for TIME) or Valkey.

Tokens are stored and compared as strings. They are computed as Lua numbers (doubles), which
are exact below 2^53: microseconds since 1970 stay below that until about the year 2255.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._store import ClaimResult, ClaimStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CLAIM",
    "COMPLETE",
    "COUNT",
    "RELEASE",
    "RENEW",
    "Script",
    "claim_results",
    "counts",
    "flags",
]


@dataclass(frozen=True, slots=True)
class Script:
    """A script's body and the SHA1 that ``EVALSHA`` names it by (computed here, not loaded)."""

    name: str
    body: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        # The SHA1 Redis computes for the body: the name EVALSHA calls it by.
        sha = hashlib.sha1(self.body.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", sha)


# Splits "<digits> <digits> ..." (ARGV[k]) into a list of strings.
_WORDS = """
local function words(text)
  local out = {}
  for word in string.gmatch(text, '%d+') do out[#out + 1] = word end
  return out
end
"""

# KEYS: n records, then the fencing counters they use.
# ARGV: owner, lease ms, each record's counter position (1-based, joined; "" when there is only
# one counter, the usual case), then the n fingerprints, then the records' own owners packed in
# one argument as "<bytes>:<owner>" each ("" for all: the call's owner; "0:" for one).
# Reply: {header, result...}. The header has one word per record: "1:token" acquired,
# "2:token" completed (its stored result follows the header, in record order), "3" in progress,
# "4" mismatch.
# A record in progress under this very owner (and payload) is this call's own, written by an
# earlier try whose reply was lost: it answers "1" with its token and restarts the lease. Only a
# key's first occurrence in the call may be recognised so: a key repeated in one batch is still
# claimed once, on the first try and on every retry alike.
CLAIM = Script(
    "claim",
    _WORDS
    + """
local lease = ARGV[2]
local n = #ARGV - 4
local positions = words(ARGV[3])
local owners, packed, at = {}, ARGV[#ARGV], 1
while at <= #packed do
  local colon = string.find(packed, ':', at, true)
  local size = tonumber(string.sub(packed, at, colon - 1))
  owners[#owners + 1] = string.sub(packed, colon + 1, colon + size)
  at = colon + size + 1
end
local function owner_of(i)
  local own = owners[i]
  if own == nil or own == '' then return ARGV[1] end
  return own
end
local function fence_of(i)
  return KEYS[n + (tonumber(positions[i]) or 1)]
end

-- Read everything first (one MGET), to take all new tokens of a counter with one INCRBY.
local values = redis.call('MGET', unpack(KEYS, 1, n))
local wanted, seen = {}, {}
for i = 1, n do
  if not values[i] and not seen[KEYS[i]] then
    local fence = fence_of(i)
    wanted[fence] = (wanted[fence] or 0) + 1
  end
  seen[KEYS[i]] = true
end
local last = {}
for fence, count in pairs(wanted) do
  local top = redis.call('INCRBY', fence, count)
  if top == count then
    -- The counter did not exist (first use, restart without persistence, eviction): start
    -- from the server clock in microseconds, above every token issued before, not from 1.
    local now = redis.call('TIME')
    top = tonumber(now[1]) * 1000000 + tonumber(now[2]) + count
    redis.call('SET', fence, string.format('%d', top))
  end
  last[fence] = top - count
end

local header, results, written, answered = {}, {}, {}, {}
for i = 1, n do
  local key, fp = KEYS[i], ARGV[3 + i]
  local value = written[key] or values[i]
  if not value then
    local fence = fence_of(i)
    last[fence] = last[fence] + 1
    local token = string.format('%d', last[fence])
    value = 'p' .. token .. ':' .. #fp .. ':' .. fp .. owner_of(i)
    redis.call('SET', key, value, 'PX', lease)
    written[key] = value
    header[i] = '1:' .. token
  else
    local _, stop, token, size = string.find(value, '^.(%d+):(%d+):')
    local fp_end = stop + tonumber(size)
    if string.sub(value, stop + 1, fp_end) ~= fp then
      header[i] = '4'
    elseif string.sub(value, 1, 1) == 'c' then
      header[i] = '2:' .. token
      results[#results + 1] = string.sub(value, fp_end + 1)
    elseif not answered[key] and string.sub(value, fp_end + 1) == owner_of(i) then
      redis.call('PEXPIRE', key, lease)
      header[i] = '1:' .. token
    else
      header[i] = '3'
    end
  end
  answered[key] = true
end
table.insert(results, 1, table.concat(header, ' '))
return results
""",
)

# KEYS: records. ARGV: retention ms, the tokens joined, one result per record.
# Reply: one character per record, "1" done or "0" lost. The same token completing again (a
# retry after a lost reply) answers "1" and changes nothing.
COMPLETE = Script(
    "complete",
    _WORDS
    + """
local tokens = words(ARGV[2])
local values = redis.call('MGET', unpack(KEYS))
local out, written = {}, {}
for i = 1, #KEYS do
  -- A key repeated in the call sees what its first occurrence wrote, not the stale read.
  local value = written[KEYS[i]] or values[i]
  out[i] = '0'
  if value then
    local state, token, size = string.match(value, '^(.)(%d+):(%d+):')
    if token == tokens[i] then
      if state == 'p' then
        local fp_end = 1 + #token + 1 + #size + 1 + tonumber(size)
        local done = 'c' .. string.sub(value, 2, fp_end) .. ARGV[2 + i]
        redis.call('SET', KEYS[i], done, 'PX', ARGV[1])
        written[KEYS[i]] = done
      end
      out[i] = '1'
    end
  end
end
return table.concat(out)
""",
)

# KEYS: records. ARGV: the tokens joined. Reply: "1" released or "0" not ours (or completed),
# one character per record.
RELEASE = Script(
    "release",
    _WORDS
    + """
local tokens = words(ARGV[1])
local values = redis.call('MGET', unpack(KEYS))
local out, doomed, marked = {}, {}, {}
for i = 1, #KEYS do
  local value = values[i]
  out[i] = '0'
  if value and not marked[KEYS[i]] and string.match(value, '^p(%d+):') == tokens[i] then
    marked[KEYS[i]] = true
    doomed[#doomed + 1] = KEYS[i]
    out[i] = '1'
  end
end
if #doomed > 0 then redis.call('DEL', unpack(doomed)) end
return table.concat(out)
""",
)

# KEYS: records. ARGV: lease ms, the tokens joined. Reply: "1" renewed or "0" lost, per record.
RENEW = Script(
    "renew",
    _WORDS
    + """
local tokens = words(ARGV[2])
local values = redis.call('MGET', unpack(KEYS))
local out = {}
for i = 1, #KEYS do
  local value = values[i]
  out[i] = '0'
  if value and string.match(value, '^p(%d+):') == tokens[i] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = '1'
  end
end
return table.concat(out)
""",
)

# KEYS: counter hashes. ARGV: TTL ms, then per key its field and the amount to add ("0": read).
# Reply: per key, its fields and values joined by spaces ("r 2 f 1"), after the change. A key
# changed restarts its TTL; one only read keeps it.
COUNT = Script(
    "count",
    """
local ttl = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local field, amount = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  if amount ~= 0 then
    redis.call('HINCRBY', KEYS[i], field, amount)
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
  out[i] = table.concat(redis.call('HGETALL', KEYS[i]), ' ')
end
return out
""",
)

# The claim script's status codes.
_STATUSES = {
    b"1": ClaimStatus.ACQUIRED,
    b"2": ClaimStatus.COMPLETED,
    b"3": ClaimStatus.IN_PROGRESS,
    b"4": ClaimStatus.MISMATCH,
}


def claim_results(keys: Sequence[str], reply: list[bytes]) -> list[ClaimResult]:
    """Decode the claim script's ``{header, stored results...}`` reply (see ``CLAIM``)."""
    words = reply[0].split()
    stored = iter(reply[1:])
    results = []
    for key, word in zip(keys, words, strict=True):
        code, _, token = word.partition(b":")
        status = _STATUSES[code]
        if status is ClaimStatus.ACQUIRED:
            results.append(ClaimResult(key, status, int(token)))
        elif status is ClaimStatus.COMPLETED:
            results.append(ClaimResult(key, status, int(token), next(stored)))
        else:
            results.append(ClaimResult(key, status))
    return results


def flags(reply: bytes) -> list[bool]:
    """Decode the other scripts' one-character-per-record reply ("1" done, "0" refused)."""
    return [flag == ord("1") for flag in reply]


def counts(reply: list[bytes]) -> list[dict[str, int]]:
    """Decode the count script's reply (see ``COUNT``): one dict of counters per key."""
    decoded = []
    for entry in reply:
        words = entry.split()
        decoded.append({words[i].decode(): int(words[i + 1]) for i in range(0, len(words) - 1, 2)})
    return decoded
