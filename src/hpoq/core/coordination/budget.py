"""The global trial budget of one variant, enforced in Redis.

`n_trials` counts finished (COMPLETE or PRUNED) plus running trials across all workers.
A job claims a slot before `study.ask()` and releases it after `study.tell()`:

- claims:   ZSET job_id -> lease expiry (ms). A crashed worker's claim lapses; live
            workers extend theirs with a heartbeat.
- finished: SET of the jobs whose trial ended COMPLETE or PRUNED and was released. The
            caller also passes the job ids of the trials Optuna holds as finished; those
            neither released nor still claimed (told, then Redis was wiped) count too, so
            a wiped Redis never under-counts, and a trial told but not yet released counts
            once, through its claim.
- done:     job ids that have finished, so a redelivered job does nothing.
- pending:  job ids enqueued and not yet done (ZSET, score = enqueue time), so the
            producer enqueues only what is missing.

Every script touches only the keys of one variant, so each runs atomically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import redis

from hpoq.core.coordination.keys import BOOKKEEPING_TTL_S, RedisKeys


class Claim(IntEnum):
    GRANTED = 1
    BUDGET_FULL = 0
    ALREADY_DONE = -1
    IN_FLIGHT = -2  # the same job holds a live claim: another delivery is running it


# KEYS: 1 claims, 2 finished, 3 done, 4 pending
# ARGV: 1 job_id, 2 n_trials, 3 now_ms, 4 lease_ms, 5 ttl_s, 6.. job ids Optuna has finished
_CLAIM = """
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -2 end
local finished = redis.call('SCARD', KEYS[2])
for i = 6, #ARGV do
  local released = redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 1
  if not released and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    finished = finished + 1
  end
end
if finished + redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""

# KEYS: 1 claims; ARGV: 1 job_id, 2 new expiry ms. Returns 1 when the claim was still ours.
_HEARTBEAT = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: 1 claims, 2 finished, 3 done, 4 pending
# ARGV: 1 job_id, 2 counted (1 when the trial ended COMPLETE or PRUNED), 3 ttl_s
# Counts the trial once even if release runs twice. Returns the finished count.
_RELEASE = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if removed == 1 and ARGV[2] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return redis.call('SCARD', KEYS[2])
"""

# KEYS: 1 claims, 2 finished, 3 done, 4 pending
# ARGV: 1 now_ms, 2 stale_before_ms (pending older than this without a live claim is lost)
# Returns {finished, live claims, pending}.
_STATUS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[2])
for _, job in ipairs(stale) do
  if not redis.call('ZSCORE', KEYS[1], job) then redis.call('ZREM', KEYS[4], job) end
end
local done = redis.call('SMEMBERS', KEYS[3])
for _, job in ipairs(done) do redis.call('ZREM', KEYS[4], job) end
return {redis.call('SCARD', KEYS[2]), redis.call('ZCARD', KEYS[1]),
        redis.call('ZCARD', KEYS[4])}
"""


@dataclass(frozen=True)
class BudgetStatus:
    finished: int
    running: int
    pending: int  # enqueued and not done (includes running)


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrialBudget:
    """Budget operations for variants; `study_key` is the variant's study_key_hash."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._claim = client.register_script(_CLAIM)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._release = client.register_script(_RELEASE)
        self._status = client.register_script(_STATUS)

    def _all(self, study_key: str) -> list[str]:
        k = self._keys
        return [
            k.budget_claims(study_key),
            k.budget_finished(study_key),
            k.budget_done_jobs(study_key),
            k.budget_pending(study_key),
        ]

    def claim(
        self,
        study_key: str,
        job_id: str,
        n_trials: int,
        finished_jobs: Sequence[str],
        lease_s: float,
    ) -> Claim:
        """`finished_jobs`: job ids of the variant's COMPLETE and PRUNED trials in Optuna."""
        result = self._claim(
            keys=self._all(study_key),
            args=[
                job_id,
                n_trials,
                _now_ms(),
                int(lease_s * 1000),
                BOOKKEEPING_TTL_S,
                *finished_jobs,
            ],
        )
        return Claim(int(result))

    def heartbeat(self, study_key: str, job_id: str, lease_s: float) -> bool:
        expiry = _now_ms() + int(lease_s * 1000)
        return bool(
            self._heartbeat(keys=[self._keys.budget_claims(study_key)], args=[job_id, expiry])
        )

    def release(self, study_key: str, job_id: str, counted: bool) -> int:
        return int(
            self._release(
                keys=self._all(study_key), args=[job_id, "1" if counted else "0", BOOKKEEPING_TTL_S]
            )
        )

    def mark_done(self, study_key: str, job_id: str) -> bool:
        """Retire a job without a claim (a reaped job): True for the first caller only."""
        done_key = self._keys.budget_done_jobs(study_key)
        pipe = self._client.pipeline(transaction=True)
        pipe.sadd(done_key, job_id)
        pipe.zrem(self._keys.budget_pending(study_key), job_id)
        pipe.expire(done_key, BOOKKEEPING_TTL_S)
        added, _, _ = pipe.execute()
        return bool(added)

    def is_done(self, study_key: str, job_id: str) -> bool:
        return bool(self._client.sismember(self._keys.budget_done_jobs(study_key), job_id))

    def claim_is_live(self, study_key: str, job_id: str) -> bool:
        score = self._client.zscore(self._keys.budget_claims(study_key), job_id)
        return score is not None and float(score) > _now_ms()

    def add_pending(self, study_key: str, job_ids: list[str]) -> None:
        if not job_ids:
            return
        key = self._keys.budget_pending(study_key)
        now = _now_ms()
        pipe = self._client.pipeline(transaction=True)
        pipe.zadd(key, dict.fromkeys(job_ids, now))
        pipe.expire(key, BOOKKEEPING_TTL_S)
        pipe.execute()

    def remove_pending(self, study_key: str, job_ids: list[str]) -> None:
        if job_ids:
            self._client.zrem(self._keys.budget_pending(study_key), *job_ids)

    def status(self, study_key: str, lost_after_s: float) -> BudgetStatus:
        now = _now_ms()
        finished, running, pending = self._status(
            keys=self._all(study_key), args=[now, now - int(lost_after_s * 1000)]
        )
        return BudgetStatus(int(finished), int(running), int(pending))
