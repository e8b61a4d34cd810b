"""In-flight leases: owned leases (`OwnedLeases`, shared by every holder-only lease), and
the leases of benchmark keys with their fencing numbers.

Contract:
- A lease is one Redis string `owner token` with a TTL. `acquire` is SET NX PX: one
  holder at a time. Only the holder may extend (`heartbeat`), hand over (`transfer`) or
  release it: each is a compare-and-act Lua script, never a plain DEL, so a late finisher
  cannot remove someone else's lease.
- A crashed holder's lease lapses after its TTL; the key can then be benchmarked again:
  the reaper enqueues it again from the registry of active benchmark jobs (`register`,
  `jobs`), from which a job leaves in the same script that releases its lease (`finish`),
  so a finished job is never taken for a lapsed one.
- A holder whose lease is gone but whose fence is still the key's latest takes it back on
  its next heartbeat (Redis lost its data, or the holder stalled past its TTL); once a
  newer job holds the key, the old holder has lost it for good.
- `next_fence` is an INCR per key that only grows. A result records the fence it was
  measured under; a worker whose fence is no longer the latest must not publish.
"""

from __future__ import annotations

import redis

from hpoq.core.coordination.keys import BOOKKEEPING_TTL_S, RedisKeys
from hpoq.core.fingerprints import sha256_hex

# KEYS: 1 lease, 2 fence, 3 active jobs; ARGV: 1 owner, 2 ttl ms, 3 the owner's fence,
# 4 job id, 5 job JSON, 6 registry ttl s.
# 1 when extended, 2 when taken back (nobody held it and no newer fence exists; a fence or
# registry entry that Redis lost is written back), 0 when a newer job holds the key.
_EXTEND = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if current then return 0 end
local fence = redis.call('GET', KEYS[2])
if fence and fence ~= ARGV[3] then return 0 end
if not fence then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSETNX', KEYS[3], ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 2
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

# KEYS[1] lease; ARGV[1] expected owner, ARGV[2] ttl ms. 1 when extended, 0 when another
# owner (or nobody) holds it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
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

# KEYS: 1 lease, 2 active jobs; ARGV: 1 expected owner, 2 job id.
# The job leaves the registry, then its lease is released if it still holds it.
_FINISH = """
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def key_hash(benchmark_key: str) -> str:
    """Redis key suffix for a benchmark key (the key itself may be long)."""
    return sha256_hex(benchmark_key)[:32]


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


class OwnedLeases:
    """Leases on plain Redis keys that only their owner may extend or release: acquire is
    SET NX PX, renew a compare-and-PEXPIRE, release a compare-and-DEL."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        return bool(self._client.set(key, owner, nx=True, px=_ms(ttl_s)))

    def renew(self, key: str, owner: str, ttl_s: float) -> bool:
        """Extend `owner`'s lease; False once it lapsed or someone else holds it."""
        return bool(self._renew(keys=[key], args=[owner, _ms(ttl_s)]))

    def release(self, key: str, owner: str) -> bool:
        return bool(self._release(keys=[key], args=[owner]))

    def holder(self, key: str) -> str | None:
        value = self._client.get(key)
        return None if value is None else str(value)

    def holders(self, keys: list[str]) -> list[str | None]:
        """Who holds each key, in one round trip (MGET)."""
        if not keys:
            return []
        return [None if v is None else str(v) for v in self._client.mget(keys)]


class BenchmarkLeases:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._owned = OwnedLeases(client)
        self._extend = client.register_script(_EXTEND)
        self._transfer = client.register_script(_TRANSFER)
        self._finish = client.register_script(_FINISH)

    def _lease(self, benchmark_key: str) -> str:
        return self._keys.benchmark_lease(key_hash(benchmark_key))

    def acquire(self, benchmark_key: str, owner: str, ttl_s: float) -> bool:
        return self._owned.acquire(self._lease(benchmark_key), owner, ttl_s)

    def holder(self, benchmark_key: str) -> str | None:
        return self._owned.holder(self._lease(benchmark_key))

    def holders(self, benchmark_keys: list[str]) -> list[str | None]:
        return self._owned.holders([self._lease(k) for k in benchmark_keys])

    def transfer(self, benchmark_key: str, expected: str, new_owner: str, ttl_s: float) -> bool:
        return bool(
            self._transfer(
                keys=[self._lease(benchmark_key)], args=[expected, new_owner, int(ttl_s * 1000)]
            )
        )

    def heartbeat(
        self, benchmark_key: str, owner: str, ttl_s: float, *, fence: int, job_id: str, job: str
    ) -> bool:
        """Keep the lease; False once a newer job holds the key (`job`: the job's JSON, for
        the registry should Redis have lost it)."""
        hashed = key_hash(benchmark_key)
        return bool(
            self._extend(
                keys=[
                    self._keys.benchmark_lease(hashed),
                    self._keys.benchmark_fence(hashed),
                    self._keys.active_benchmarks(),
                ],
                args=[owner, int(ttl_s * 1000), fence, job_id, job, BOOKKEEPING_TTL_S],
            )
        )

    def release(self, benchmark_key: str, owner: str) -> bool:
        return self._owned.release(self._lease(benchmark_key), owner)

    def finish(self, benchmark_key: str, owner: str, job_id: str) -> bool:
        """The job is over (measured, failed, superseded): it leaves the registry and its
        lease is released if `owner` still holds it."""
        return bool(
            self._finish(
                keys=[self._lease(benchmark_key), self._keys.active_benchmarks()],
                args=[owner, job_id],
            )
        )

    def register(self, job_id: str, job: str) -> None:
        """Record an enqueued job (`job`: its JSON) for the reaper."""
        key = self._keys.active_benchmarks()
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(key, job_id, job)
        pipe.expire(key, BOOKKEEPING_TTL_S)
        pipe.execute()

    def unregister(self, job_id: str) -> bool:
        return bool(self._client.hdel(self._keys.active_benchmarks(), job_id))

    def jobs(self) -> dict[str, str]:
        """Every registered job: job id -> job JSON."""
        raw = self._client.hgetall(self._keys.active_benchmarks())
        return {str(k): str(v) for k, v in raw.items()}

    def next_fence(self, benchmark_key: str) -> int:
        return int(self._client.incr(self._keys.benchmark_fence(key_hash(benchmark_key))))

    def current_fence(self, benchmark_key: str) -> int:
        value = self._client.get(self._keys.benchmark_fence(key_hash(benchmark_key)))
        return int(value) if value else 0
