"""Turns on one device: trials share it, a benchmark (or a trial retried alone) has it alone.

A reader-writer lease in Redis, one per device (a GPU as a host sees it, or a host's CPU),
with writers first:

- shared: ZSET owner -> expiry (ms, Redis clock). `acquire_shared` is granted only while
  no exclusive holder exists and no exclusive request waits, so a waiting benchmark is
  never starved by trials that keep starting. A holder extends its own entry
  (`extend_shared`) and removes it (`release_shared`); an entry past its expiry counts
  for nobody and is dropped by the next script that looks.
- exclusive: one string `owner` with a TTL. `acquire_exclusive` first queues the request
  (`wanted`, a string with a TTL, one requester at a time: the first keeps its place as
  long as it keeps asking, and new shared holders are refused meanwhile), then takes the
  lease once no live shared holder is left. Only the holder may extend or release it
  (compare-and-act scripts, never a plain DEL); `release_exclusive` also withdraws the
  owner's waiting request.
- Every key lapses one TTL after its last write: a crashed holder or requester frees the
  device one lease period later. Expiry is computed from Redis's `TIME` inside each
  script, never from a worker's clock.

Every script touches the three keys of one device only, so each runs atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.fingerprints import sha256_hex

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: 1 shared, 2 exclusive, 3 wanted; ARGV: 1 owner, 2 ttl ms. 1 when granted.
_ACQUIRE_SHARED = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: 1 shared; ARGV: 1 owner, 2 ttl ms. 1 when the entry was live and is extended.
_EXTEND_SHARED = (
    _NOW
    + """
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 0
"""
)

# KEYS: 1 shared, 2 exclusive, 3 wanted; ARGV: 1 owner, 2 ttl ms.
# Returns {granted (0/1), live shared holders, holder or requester ahead ('' when none)}.
_ACQUIRE_EXCLUSIVE = (
    _NOW
    + """
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then return {1, 0, ''} end
local wanted = redis.call('GET', KEYS[3])
if wanted and wanted ~= ARGV[1] then return {0, 0, wanted} end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
if holder then return {0, 0, holder} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local shared = redis.call('ZCARD', KEYS[1])
if shared > 0 then return {0, shared, ''} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
return {1, 0, ''}
"""
)

# KEYS: 1 exclusive; ARGV: 1 owner, 2 ttl ms. 1 when extended.
_EXTEND_EXCLUSIVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: 1 exclusive, 2 wanted; ARGV: 1 owner. Releases the lease and withdraws the request
# of `owner`, whichever it has. 1 when the lease was held.
_RELEASE_EXCLUSIVE = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: 1 shared, 2 exclusive, 3 wanted. {exclusive holder, requester, live shared...}.
_STATE = (
    _NOW
    + """
local result = {redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or ''}
for _, owner in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  table.insert(result, owner)
end
return result
"""
)


@dataclass(frozen=True)
class ExclusiveAttempt:
    granted: bool
    shared_holders: int  # live shared holders it waits for (0 when something else is ahead)
    ahead: str | None  # the exclusive holder or the earlier request it waits behind


@dataclass(frozen=True)
class DeviceState:
    exclusive: str | None
    wanted: str | None
    shared: tuple[str, ...]


def device_hash(device_id: str) -> str:
    """Redis key part for a device id (host names and device lists may hold any character)."""
    return sha256_hex(device_id)[:16]


class DeviceLease:
    """The lease of one device; owners are strings unique per job and process."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, device_id: str) -> None:
        self.device_id = device_id
        hashed = device_hash(device_id)
        self._client = client
        self._shared = keys.device_shared(hashed)
        self._exclusive = keys.device_exclusive(hashed)
        self._wanted = keys.device_exclusive_wanted(hashed)
        self._acquire_shared = client.register_script(_ACQUIRE_SHARED)
        self._extend_shared = client.register_script(_EXTEND_SHARED)
        self._acquire_exclusive = client.register_script(_ACQUIRE_EXCLUSIVE)
        self._extend_exclusive = client.register_script(_EXTEND_EXCLUSIVE)
        self._release_exclusive = client.register_script(_RELEASE_EXCLUSIVE)
        self._state = client.register_script(_STATE)

    def _all(self) -> list[str]:
        return [self._shared, self._exclusive, self._wanted]

    def acquire_shared(self, owner: str, ttl_s: float) -> bool:
        return bool(self._acquire_shared(keys=self._all(), args=[owner, _ms(ttl_s)]))

    def extend_shared(self, owner: str, ttl_s: float) -> bool:
        return bool(self._extend_shared(keys=[self._shared], args=[owner, _ms(ttl_s)]))

    def release_shared(self, owner: str) -> bool:
        return bool(self._client.zrem(self._shared, owner))

    def acquire_exclusive(self, owner: str, ttl_s: float) -> ExclusiveAttempt:
        granted, shared, ahead = self._acquire_exclusive(keys=self._all(), args=[owner, _ms(ttl_s)])
        return ExclusiveAttempt(bool(int(granted)), int(shared), _text(ahead) or None)

    def extend_exclusive(self, owner: str, ttl_s: float) -> bool:
        return bool(self._extend_exclusive(keys=[self._exclusive], args=[owner, _ms(ttl_s)]))

    def release_exclusive(self, owner: str) -> bool:
        return bool(self._release_exclusive(keys=[self._exclusive, self._wanted], args=[owner]))

    def state(self) -> DeviceState:
        exclusive, wanted, *shared = (_text(v) for v in self._state(keys=self._all()))
        return DeviceState(exclusive or None, wanted or None, tuple(shared))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
