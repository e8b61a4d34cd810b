"""The global trial budget of one variant, enforced in Redis.

`n_trials` counts finished (COMPLETE or PRUNED) plus running trials across all workers.
A job claims a slot before `study.ask()` and releases it after `study.tell()`:

- claims:    ZSET job_id -> lease expiry (ms, Redis's clock). A live worker extends its
             claim with a heartbeat; a crashed worker's claim lapses and keeps its slot
             until the reaper takes it (`reap`), in the same script that retires the job.
- finished:  SET of the jobs whose trial ended COMPLETE or PRUNED and was released. The
             caller also passes the job ids of the trials Optuna holds as finished; those
             neither released nor still claimed (told, then Redis lost its data) count too,
             so a wiped Redis never under-counts, and a trial told but not yet released
             counts once, through its claim.
- done:      job ids that have finished or were reaped: a redelivered job does nothing, and
             a heartbeat never revives the claim of a reaped job (its worker must stop).
- pending:   job ids enqueued and not yet done (ZSET, score = enqueue time), so the
             producer enqueues only what is missing. A replacement job enters it in the
             same script that retires the job it replaces, so a variant is never seen idle
             between the two.
- unclaimed: RUNNING trials seen without any claim (Redis lost it) -> when first seen. A
             live worker re-creates its claim on its next heartbeat; the reaper takes a job
             only after it has stayed unclaimed for a whole lease.

Time is Redis's (`TIME` inside each script), never a worker's clock. Every script touches
only the keys of one variant, so each runs atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import redis

from hpoq.core.coordination.keys import BOOKKEEPING_TTL_S, RedisKeys


class Claim(IntEnum):
    GRANTED = 1
    BUDGET_FULL = 0
    ALREADY_DONE = -1
    IN_FLIGHT = -2  # the same job holds a claim: another delivery is running it


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: 1 claims, 2 finished, 3 done, 4 pending
# ARGV: 1 job_id, 2 n_trials, 3 lease_ms, 4 ttl_s, 5 how many finished job ids follow,
#       then the job ids Optuna holds as finished, then those it holds as RUNNING.
# A claim past its expiry still holds its slot: only the reaper frees it (and fails its
# trial). A RUNNING trial without a claim holds one too until the reaper says otherwise.
_CLAIM = (
    """
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return -1 end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -2 end
"""
    + _NOW
    + """
local occupied = redis.call('SCARD', KEYS[2]) + redis.call('ZCARD', KEYS[1])
local last_finished = 5 + tonumber(ARGV[5])
for i = 6, #ARGV do
  local job = ARGV[i]
  if not redis.call('ZSCORE', KEYS[1], job) then
    if i <= last_finished then
      if redis.call('SISMEMBER', KEYS[2], job) == 0 then occupied = occupied + 1 end
    elseif redis.call('SISMEMBER', KEYS[3], job) == 0 then
      occupied = occupied + 1
    end
  end
end
if occupied >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""
)

# KEYS: 1 claims, 2 done; ARGV: 1 job_id, 2 lease_ms, 3 ttl_s.
# 1 while the claim is ours: extended, or re-created when Redis lost it. 0 once the job is
# done (the reaper took it): the worker must stop and publish nothing.
_HEARTBEAT = (
    """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
"""
    + _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: 1 claims, 2 finished, 3 done, 4 pending
# ARGV: 1 job_id, 2 counted (1 when the trial ended COMPLETE or PRUNED), 3 ttl_s,
#       4 replacement job id ('' for none)
# Retires the job once: a job the reaper took already is neither counted nor replaced
# here (the reaper replaced it). Returns 1 when this call retired the job.
_RELEASE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('SADD', KEYS[2], ARGV[1]) end
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[4], now, ARGV[4]) end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 1
"""
)

# KEYS: 1 claims, 2 done, 3 pending, 4 unclaimed
# ARGV: 1 trusted ('1': the claims can be believed, see reaper_watch.py), 2 lease_ms,
#       3 ttl_s, 4 replacements allowed for jobs that have a trial,
#       5.. triples (job id, its replacement's job id, '1' when it has a RUNNING trial)
# Takes every lapsed claim and every RUNNING trial's job unclaimed for a whole lease: the
# job is done (a late heartbeat finds it so), and its replacement is pending, atomically.
# Returns a flat list: job id, replacement ('' for none), ... A job retired earlier whose
# trial is still RUNNING is returned too (with its replacement if that is still pending),
# so that the caller fails the trial and sends the replacement.
_REAP = (
    _NOW
    + """
local trusted = ARGV[1] == '1'
local allowed = tonumber(ARGV[4])
local out = {}
local running = {}
local function retire(job, replacement, has_trial)
  redis.call('ZREM', KEYS[1], job)
  redis.call('ZREM', KEYS[3], job)
  redis.call('HDEL', KEYS[4], job)
  redis.call('SADD', KEYS[2], job)
  local given = ''
  if not has_trial or allowed > 0 then
    if has_trial then allowed = allowed - 1 end
    redis.call('ZADD', KEYS[3], now, replacement)
    given = replacement
  end
  table.insert(out, job)
  table.insert(out, given)
end
for i = 5, #ARGV, 3 do
  local job, replacement, has_trial = ARGV[i], ARGV[i + 1], ARGV[i + 2] == '1'
  if has_trial then running[job] = true end
  if redis.call('SISMEMBER', KEYS[2], job) == 1 then
    if has_trial then
      local given = ''
      if redis.call('ZSCORE', KEYS[3], replacement) then given = replacement end
      table.insert(out, job)
      table.insert(out, given)
    end
  else
    local expiry = redis.call('ZSCORE', KEYS[1], job)
    if expiry then
      redis.call('HDEL', KEYS[4], job)
      if trusted and tonumber(expiry) <= now then retire(job, replacement, has_trial) end
    elseif has_trial then
      local first = redis.call('HGET', KEYS[4], job)
      if not first then
        redis.call('HSET', KEYS[4], job, now)
      elseif trusted and now - tonumber(first) >= tonumber(ARGV[2]) then
        retire(job, replacement, has_trial)
      end
    end
  end
end
for _, job in ipairs(redis.call('HKEYS', KEYS[4])) do
  if not running[job] then redis.call('HDEL', KEYS[4], job) end
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return out
"""
)

# KEYS: 1 claims, 2 finished, 3 pending
# ARGV: 1 lost_after_ms (a pending job this old without a claim is taken as lost)
# Returns {finished, live claims, lapsed claims, pending}.
_STATUS = (
    _NOW
    + """
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[1]))
for _, job in ipairs(stale) do
  if not redis.call('ZSCORE', KEYS[1], job) then redis.call('ZREM', KEYS[3], job) end
end
return {redis.call('SCARD', KEYS[2]), redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'),
        redis.call('ZCOUNT', KEYS[1], '-inf', now), redis.call('ZCARD', KEYS[3])}
"""
)


@dataclass(frozen=True)
class BudgetStatus:
    finished: int
    running: int  # live claims
    lapsed: int  # claims past their expiry that the reaper has not taken yet
    pending: int  # enqueued and not done (includes running)

    @property
    def active(self) -> bool:
        """Something may still run: a claim (live or lapsed) or a job waiting."""
        return bool(self.running or self.lapsed or self.pending)


@dataclass(frozen=True)
class ReapCandidate:
    job_id: str
    replacement_id: str
    has_trial: bool  # a RUNNING trial of the variant carries this job id


@dataclass(frozen=True)
class ReapedJob:
    job_id: str
    replacement_id: str | None  # pending now; the caller sends it


def _lease_ms(lease_s: float) -> int:
    return max(1, int(lease_s * 1000))


class TrialBudget:
    """Budget operations for variants; `study_key` is the variant's study_key_hash."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._claim = client.register_script(_CLAIM)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._release = client.register_script(_RELEASE)
        self._reap = client.register_script(_REAP)
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
        running_jobs: Sequence[str] = (),
    ) -> Claim:
        """`finished_jobs`, `running_jobs`: job ids of the variant's COMPLETE and PRUNED,
        and of its RUNNING trials, in Optuna."""
        result = self._claim(
            keys=self._all(study_key),
            args=[
                job_id,
                n_trials,
                _lease_ms(lease_s),
                BOOKKEEPING_TTL_S,
                len(finished_jobs),
                *finished_jobs,
                *running_jobs,
            ],
        )
        return Claim(int(result))

    def heartbeat(self, study_key: str, job_id: str, lease_s: float) -> bool:
        """Extend the claim (re-create it if Redis lost it). False once the job is done: the
        reaper took it, and the caller must publish nothing."""
        k = self._keys
        return bool(
            self._heartbeat(
                keys=[k.budget_claims(study_key), k.budget_done_jobs(study_key)],
                args=[job_id, _lease_ms(lease_s), BOOKKEEPING_TTL_S],
            )
        )

    def release(
        self, study_key: str, job_id: str, counted: bool, replacement: str | None = None
    ) -> bool:
        """Retire the job after its trial was told; `replacement` enters pending with it.
        True when this call retired the job (False: it was done already, e.g. reaped)."""
        return bool(
            self._release(
                keys=self._all(study_key),
                args=[job_id, "1" if counted else "0", BOOKKEEPING_TTL_S, replacement or ""],
            )
        )

    def abandon(self, study_key: str, job_id: str) -> None:
        """Give the slot back without retiring the job: it failed before it had a trial,
        and a later delivery of it may claim again."""
        self._client.zrem(self._keys.budget_claims(study_key), job_id)

    def mark_done(self, study_key: str, job_id: str) -> bool:
        """Retire a job that holds no claim (budget full): True for the first caller only."""
        done_key = self._keys.budget_done_jobs(study_key)
        pipe = self._client.pipeline(transaction=True)
        pipe.sadd(done_key, job_id)
        pipe.zrem(self._keys.budget_pending(study_key), job_id)
        pipe.expire(done_key, BOOKKEEPING_TTL_S)
        added, _, _ = pipe.execute()
        return bool(added)

    def is_done(self, study_key: str, job_id: str) -> bool:
        return bool(self._client.sismember(self._keys.budget_done_jobs(study_key), job_id))

    def claimed_jobs(self, study_key: str) -> list[str]:
        """Every job holding a claim, live or lapsed."""
        return [str(j) for j in self._client.zrange(self._keys.budget_claims(study_key), 0, -1)]

    def add_pending(self, study_key: str, job_ids: list[str]) -> None:
        if not job_ids:
            return
        key = self._keys.budget_pending(study_key)
        pipe = self._client.pipeline(transaction=True)
        pipe.zadd(key, dict.fromkeys(job_ids, self._server_ms()))
        pipe.expire(key, BOOKKEEPING_TTL_S)
        pipe.execute()

    def remove_pending(self, study_key: str, job_ids: list[str]) -> None:
        if job_ids:
            self._client.zrem(self._keys.budget_pending(study_key), *job_ids)

    def reap(
        self,
        study_key: str,
        candidates: Sequence[ReapCandidate],
        *,
        trusted: bool,
        lease_s: float,
        replacements_allowed: int,
    ) -> list[ReapedJob]:
        """Take the lapsed claims and long-unclaimed RUNNING jobs among `candidates` (see
        the script). Jobs without a trial are always replaced (their lineage is bounded by
        deliveries); jobs with one while `replacements_allowed` lasts."""
        k = self._keys
        args: list[str | int] = [
            "1" if trusted else "0",
            _lease_ms(lease_s),
            BOOKKEEPING_TTL_S,
            max(0, replacements_allowed),
        ]
        for c in candidates:
            args += [c.job_id, c.replacement_id, "1" if c.has_trial else "0"]
        flat = self._reap(
            keys=[
                k.budget_claims(study_key),
                k.budget_done_jobs(study_key),
                k.budget_pending(study_key),
                k.budget_unclaimed(study_key),
            ],
            args=args,
        )
        return [ReapedJob(str(flat[i]), str(flat[i + 1]) or None) for i in range(0, len(flat), 2)]

    def status(self, study_key: str, lost_after_s: float) -> BudgetStatus:
        k = self._keys
        finished, running, lapsed, pending = self._status(
            keys=[
                k.budget_claims(study_key),
                k.budget_finished(study_key),
                k.budget_pending(study_key),
            ],
            args=[int(lost_after_s * 1000)],
        )
        return BudgetStatus(int(finished), int(running), int(lapsed), int(pending))

    def _server_ms(self) -> int:
        seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000
