"""In-flight leases for benchmark keys, and their fencing numbers.

Contract:
- A lease is one Redis string `owner token` with a TTL. `acquire` is SET NX PX: one
  holder at a time. Only the holder may extend (`heartbeat`), hand over (`transfer`) or
  release it: each is a compare-and-act Lua script, never a plain DEL, so a late finisher
  cannot remove someone else's lease.
- A crashed holder's lease lapses after its TTL; the key can then be benchmarked again.
- `next_fence` is an INCR per key that only grows. A result records the fence it was
  measured under; a worker whose fence is no longer the latest must not publish.
"""

from __future__ import annotations

import redis

from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.fingerprints import sha256_hex

# KEYS[1] lease; ARGV[1] expected owner, ARGV[2] ttl ms. 1 when extended.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lease; ARGV[1] expected owner, ARGV[2] new owner, ARGV[3] ttl ms.
# Hands the lease over when `expected` holds it, or takes it when nobody does. 1 on success.
_TRANSFER = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or current == false then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV[1] expected owner. 1 when deleted.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def key_hash(benchmark_key: str) -> str:
    """Redis key suffix for a benchmark key (the key itself may be long)."""
    return sha256_hex(benchmark_key)[:32]


class BenchmarkLeases:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._extend = client.register_script(_EXTEND)
        self._transfer = client.register_script(_TRANSFER)
        self._release = client.register_script(_RELEASE)

    def _lease(self, benchmark_key: str) -> str:
        return self._keys.benchmark_lease(key_hash(benchmark_key))

    def acquire(self, benchmark_key: str, owner: str, ttl_s: float) -> bool:
        return bool(
            self._client.set(self._lease(benchmark_key), owner, nx=True, px=int(ttl_s * 1000))
        )

    def holder(self, benchmark_key: str) -> str | None:
        value = self._client.get(self._lease(benchmark_key))
        return None if value is None else str(value)

    def holders(self, benchmark_keys: list[str]) -> list[str | None]:
        if not benchmark_keys:
            return []
        values = self._client.mget([self._lease(k) for k in benchmark_keys])
        return [None if v is None else str(v) for v in values]

    def transfer(self, benchmark_key: str, expected: str, new_owner: str, ttl_s: float) -> bool:
        return bool(
            self._transfer(
                keys=[self._lease(benchmark_key)], args=[expected, new_owner, int(ttl_s * 1000)]
            )
        )

    def heartbeat(self, benchmark_key: str, owner: str, ttl_s: float) -> bool:
        return bool(
            self._extend(keys=[self._lease(benchmark_key)], args=[owner, int(ttl_s * 1000)])
        )

    def release(self, benchmark_key: str, owner: str) -> bool:
        return bool(self._release(keys=[self._lease(benchmark_key)], args=[owner]))

    def next_fence(self, benchmark_key: str) -> int:
        return int(self._client.incr(self._keys.benchmark_fence(key_hash(benchmark_key))))

    def current_fence(self, benchmark_key: str) -> int:
        value = self._client.get(self._keys.benchmark_fence(key_hash(benchmark_key)))
        return int(value) if value else 0
