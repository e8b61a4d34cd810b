"""Whether the claims and leases in Redis can be believed: the reaper's record of its passes.

A lapsed claim means a dead worker only if its holder had the whole lease to renew it while
Redis was up and kept its data. Two things break that, and the reaper tells them apart
from a lapse by when it last looked:

- Redis lost its data (a restart without the append-only file, a failover): the record is
  gone with everything else;
- Redis, or every reaper, was away for a while (a restart with its data, all workers
  down): the record is older than `gap`, and claims may have lapsed for live holders that
  could not reach Redis.

Either way the claims are trusted again only `settle` after the pass that noticed: long
enough for every live holder to renew (or re-create) its claim on its next heartbeat.
Time is Redis's (`TIME` inside the script). The record expires after a quiet day, which
only costs one `settle` on the next pass.
"""

from __future__ import annotations

import redis

from hpoq.core.coordination.keys import REAPER_WATCH_TTL_S, RedisKeys

# KEYS: 1 watch (hash: last, trusted_from)
# ARGV: 1 gap_ms, 2 settle_ms, 3 ttl_s
# Records this pass; returns {1 when the claims are trusted now, ms until they are}.
_PASS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local trusted_from = tonumber(redis.call('HGET', KEYS[1], 'trusted_from') or '0')
if last == 0 or now - last > tonumber(ARGV[1]) then
  trusted_from = now + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'trusted_from', trusted_from)
end
redis.call('HSET', KEYS[1], 'last', now)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if now >= trusted_from then return {1, 0} end
return {0, trusted_from - now}
"""

# KEYS: 1 watch. Moves `last` to the end of a pass (a long pass is no gap), unless the
# record vanished meanwhile (then the next pass must notice).
_FINISH = """
if redis.call('HEXISTS', KEYS[1], 'trusted_from') == 0 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'last', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return 1
"""


class ReaperWatch:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._key = keys.reaper_watch()
        self._pass = client.register_script(_PASS)
        self._finish = client.register_script(_FINISH)

    def record_pass(self, lease_s: float) -> tuple[bool, float]:
        """Record a pass; (trusted now, seconds until trusted).

        gap = 2/3 of a lease: a holder renews every third of a lease, so a live claim can
        only lapse while nobody could reach Redis for more than two thirds of one.
        settle = one lease: three chances for every live holder to renew.
        """
        lease_ms = max(1, int(lease_s * 1000))
        trusted, wait_ms = self._pass(
            keys=[self._key], args=[lease_ms * 2 // 3, lease_ms, REAPER_WATCH_TTL_S]
        )
        return bool(trusted), int(wait_ms) / 1000

    def finish_pass(self) -> None:
        self._finish(keys=[self._key])
