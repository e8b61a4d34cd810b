"""The variants the reaper watches, with what it needs to act without the producer.

A hash: study_key -> one trial job of the variant (its JSON), from which replacement jobs
are made. A producer registers a variant in the same transaction that records the jobs it
is about to send as pending; the reaper retires it once it has finished, in a script that
refuses while any job of the variant is pending or holds a claim, so a variant that a
producer is topping up at that moment stays watched.
"""

from __future__ import annotations

import redis

from hpoq.core.coordination.keys import BOOKKEEPING_TTL_S, RedisKeys

# KEYS: 1 active variants, 2 pending of the variant; ARGV: 1 study_key, 2 job JSON,
# 3 ttl_s, 4.. job ids about to be sent.
_REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], now, ARGV[i]) end
if #ARGV >= 4 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return 1
"""

# KEYS: 1 active variants, 2 pending, 3 claims; ARGV: 1 study_key. 1 when retired.
_RETIRE = """
if redis.call('ZCARD', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


class ActiveVariants:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._register = client.register_script(_REGISTER)
        self._retire = client.register_script(_RETIRE)

    def register(self, study_key: str, job: str, pending: list[str] | None = None) -> None:
        """Watch the variant (`job`: one of its trial jobs, JSON); `pending`: job ids about
        to be sent, recorded as pending in the same step."""
        self._register(
            keys=[self._keys.active_variants(), self._keys.budget_pending(study_key)],
            args=[study_key, job, BOOKKEEPING_TTL_S, *(pending or [])],
        )

    def variants(self) -> dict[str, str]:
        """study_key -> trial job JSON, for every watched variant."""
        raw = self._client.hgetall(self._keys.active_variants())
        return {str(k): str(v) for k, v in raw.items()}

    def retire(self, study_key: str) -> bool:
        """Stop watching a finished variant; False while a job of it is pending or claimed."""
        return bool(
            self._retire(
                keys=[
                    self._keys.active_variants(),
                    self._keys.budget_pending(study_key),
                    self._keys.budget_claims(study_key),
                ],
                args=[study_key],
            )
        )

    def forget(self, study_key: str) -> None:
        """Stop watching a variant whose study no longer exists."""
        self._client.hdel(self._keys.active_variants(), study_key)
