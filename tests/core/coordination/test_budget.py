"""The trial budget's contract, on fakeredis and on a real Redis."""

from __future__ import annotations

import time

import redis

from hpoq.core.coordination.budget import Claim, ReapCandidate, TrialBudget
from hpoq.core.coordination.keys import RedisKeys

KEYS = RedisKeys("test")
STUDY = "study-key"


def _candidate(job: str, has_trial: bool = True) -> ReapCandidate:
    return ReapCandidate(job, f"{job}.r1", has_trial)


def _reap(budget: TrialBudget, *jobs: ReapCandidate, trusted: bool = True, allowed: int = 9):
    return budget.reap(
        STUDY, list(jobs), trusted=trusted, lease_s=0.05, replacements_allowed=allowed
    )


def test_claims_stop_at_n_trials_counting_running_and_finished(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    granted = [budget.claim(STUDY, f"j{i}", 3, [], 60) for i in range(5)]
    assert granted == [Claim.GRANTED] * 3 + [Claim.BUDGET_FULL] * 2
    budget.release(STUDY, "j0", counted=True)
    assert budget.claim(STUDY, "j3", 3, [], 60) is Claim.BUDGET_FULL  # 1 finished + 2 running


def test_failed_trial_frees_its_slot_and_its_replacement_is_pending(
    any_redis: redis.Redis,
) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.add_pending(STUDY, ["a"])
    assert budget.claim(STUDY, "a", 1, [], 60) is Claim.GRANTED
    assert budget.release(STUDY, "a", counted=False, replacement="a.r1")
    assert any_redis.zrange(KEYS.budget_pending(STUDY), 0, -1) == ["a.r1"]
    assert budget.claim(STUDY, "a.r1", 1, [], 60) is Claim.GRANTED


def test_same_job_twice_is_in_flight_then_done(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "a", 5, [], 60) is Claim.GRANTED
    assert budget.claim(STUDY, "a", 5, [], 60) is Claim.IN_FLIGHT
    budget.release(STUDY, "a", counted=True)
    assert budget.claim(STUDY, "a", 5, [], 60) is Claim.ALREADY_DONE


def test_release_retires_and_counts_a_trial_once(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.claim(STUDY, "a", 5, [], 60)
    assert budget.release(STUDY, "a", counted=True, replacement="x")
    assert not budget.release(STUDY, "a", counted=True, replacement="y")
    assert budget.status(STUDY, lost_after_s=60).finished == 1
    assert any_redis.zrange(KEYS.budget_pending(STUDY), 0, -1) == ["x"]


def test_expiry_is_on_the_redis_clock(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.claim(STUDY, "a", 5, [], 30)
    seconds, micros = any_redis.time()
    server_ms = seconds * 1000 + micros // 1000
    expiry = any_redis.zscore(KEYS.budget_claims(STUDY), "a")
    assert expiry is not None and abs(expiry - (server_ms + 30_000)) < 2_000


def test_a_lapsed_claim_keeps_its_slot_until_the_reaper_takes_it(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.add_pending(STUDY, ["dead"])
    assert budget.claim(STUDY, "dead", 1, [], 0.05) is Claim.GRANTED
    time.sleep(0.1)
    status = budget.status(STUDY, lost_after_s=60)
    assert (status.running, status.lapsed, status.pending) == (0, 1, 1) and status.active
    assert budget.claim(STUDY, "b", 1, [], 60) is Claim.BUDGET_FULL
    assert _reap(budget, _candidate("dead"), trusted=False) == []  # not while untrusted
    [reaped] = _reap(budget, _candidate("dead"))
    assert (reaped.job_id, reaped.replacement_id) == ("dead", "dead.r1")
    assert budget.is_done(STUDY, "dead")
    # Retired and replaced in one step: the variant was never seen idle in between.
    assert any_redis.zrange(KEYS.budget_pending(STUDY), 0, -1) == ["dead.r1"]
    assert budget.claim(STUDY, "dead.r1", 1, [], 60) is Claim.GRANTED
    assert _reap(budget, _candidate("dead", has_trial=False)) == []  # reaped once


def test_a_late_heartbeat_never_revives_a_reaped_claim(any_redis: redis.Redis) -> None:
    """The race: a claim lapses, the reaper takes it, then the presumed-dead worker's
    heartbeat arrives. It must learn that it lost, and the replacement must get the slot."""
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "slow", 2, [], 0.05) is Claim.GRANTED
    assert budget.claim(STUDY, "other", 2, [], 60) is Claim.GRANTED
    time.sleep(0.1)
    [reaped] = _reap(budget, _candidate("slow"), _candidate("other"))
    assert reaped.job_id == "slow"
    assert not budget.heartbeat(STUDY, "slow", 60)  # late: lost for good
    assert "slow" not in budget.claimed_jobs(STUDY)
    assert budget.claim(STUDY, "slow.r1", 2, [], 60) is Claim.GRANTED
    assert not budget.release(STUDY, "slow", counted=True)  # never counted
    budget.release(STUDY, "slow.r1", counted=True)
    budget.release(STUDY, "other", counted=True)
    assert budget.status(STUDY, lost_after_s=60).finished == 2


def test_a_heartbeat_revives_a_lapsed_claim_the_reaper_has_not_taken(
    any_redis: redis.Redis,
) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.claim(STUDY, "a", 1, [], 0.05)
    time.sleep(0.1)
    assert budget.heartbeat(STUDY, "a", 60)
    assert _reap(budget, _candidate("a")) == []
    assert budget.status(STUDY, lost_after_s=60).running == 1


def test_after_redis_lost_its_data_a_live_trial_keeps_its_slot(any_redis: redis.Redis) -> None:
    """Redis forgot every claim: a RUNNING trial still holds its slot, its worker's next
    heartbeat re-creates the claim, and the reaper leaves it alone while it lives."""
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "alive", 2, [], 60) is Claim.GRANTED
    assert budget.claim(STUDY, "dead", 2, [], 60) is Claim.GRANTED
    for key in (KEYS.budget_claims(STUDY), KEYS.budget_done_jobs(STUDY)):
        any_redis.delete(key)  # the wipe
    running = ["alive", "dead"]  # what Optuna holds as RUNNING
    assert budget.claim(STUDY, "new", 2, [], 60, running) is Claim.BUDGET_FULL
    budget.mark_done(STUDY, "new")
    assert _reap(budget, _candidate("alive"), _candidate("dead")) == []  # first seen
    assert budget.heartbeat(STUDY, "alive", 60)  # re-established
    time.sleep(0.1)  # more than the reaper's lease (0.05 s) without a claim
    [reaped] = _reap(budget, _candidate("alive"), _candidate("dead"))
    assert reaped.job_id == "dead"
    assert budget.claimed_jobs(STUDY) == ["alive"]
    assert budget.heartbeat(STUDY, "alive", 60)


def test_replacements_stop_at_the_allowance_for_trials(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    for job in ("a", "b", "c"):
        budget.claim(STUDY, job, 5, [], 0.05)
    time.sleep(0.1)
    reaped = _reap(
        budget, _candidate("a"), _candidate("b"), _candidate("c", has_trial=False), allowed=1
    )
    replaced = {r.job_id: r.replacement_id for r in reaped}
    # One trial failure may be replaced; a job that died before its trial always is.
    assert replaced == {"a": "a.r1", "b": None, "c": "c.r1"}


def test_a_retired_job_whose_trial_still_runs_is_handed_back(any_redis: redis.Redis) -> None:
    """Its worker retired it but could not tell Optuna: the reaper fails the trial and
    sends the replacement still pending."""
    budget = TrialBudget(any_redis, KEYS)
    budget.claim(STUDY, "a", 5, [], 60)
    budget.release(STUDY, "a", counted=False, replacement="a.r1")
    [reaped] = _reap(budget, _candidate("a"))
    assert (reaped.job_id, reaped.replacement_id) == ("a", "a.r1")
    assert _reap(budget, _candidate("a", has_trial=False)) == []


def test_optuna_count_raises_the_finished_floor(any_redis: redis.Redis) -> None:
    """A wiped Redis must not let a variant run past n_trials: Optuna's count is a floor."""
    budget = TrialBudget(any_redis, KEYS)
    told = ["o1", "o2", "o3", "o4"]  # finished in Optuna, unknown to this Redis
    assert budget.claim(STUDY, "a", 4, told, 60) is Claim.BUDGET_FULL
    assert budget.claim(STUDY, "b", 4, told[:3], 60) is Claim.GRANTED


def test_a_trial_told_before_its_release_is_not_counted_twice(any_redis: redis.Redis) -> None:
    """Optuna already lists a told trial whose claim is not yet released; the next claim
    sees it through both, and must count it once."""
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "a", 2, [], 60) is Claim.GRANTED
    # a is told to Optuna (Optuna now lists it) but not yet released:
    assert budget.claim(STUDY, "b", 2, ["a"], 60) is Claim.GRANTED  # a counted once
    assert budget.claim(STUDY, "c", 2, ["a"], 60) is Claim.BUDGET_FULL
    budget.release(STUDY, "a", counted=True)
    budget.release(STUDY, "b", counted=False)
    assert budget.claim(STUDY, "b2", 2, ["a"], 60) is Claim.GRANTED
    assert budget.status(STUDY, lost_after_s=60).finished == 1


def test_status_drops_lost_pending_jobs(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.add_pending(STUDY, ["a", "b", "c"])
    budget.claim(STUDY, "a", 5, [], 60)
    budget.release(STUDY, "a", counted=True)
    assert budget.status(STUDY, lost_after_s=60).pending == 2
    time.sleep(0.05)
    status = budget.status(STUDY, lost_after_s=0.01)  # b and c: old, unclaimed -> lost
    assert (status.finished, status.running, status.pending) == (1, 0, 0)


def test_abandon_gives_the_slot_back_without_retiring_the_job(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "a", 1, [], 60) is Claim.GRANTED
    budget.abandon(STUDY, "a")
    assert budget.claim(STUDY, "a", 1, [], 60) is Claim.GRANTED  # its retry claims again


def test_mark_done_reports_the_first_caller_only(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    assert budget.mark_done(STUDY, "x")
    assert not budget.mark_done(STUDY, "x")
    assert budget.claim(STUDY, "x", 5, [], 60) is Claim.ALREADY_DONE


def test_every_budget_key_has_a_ttl(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.add_pending(STUDY, ["a", "b"])
    budget.claim(STUDY, "a", 5, [], 0.05)
    budget.claim(STUDY, "b", 5, [], 60)
    budget.release(STUDY, "b", counted=True)
    time.sleep(0.1)
    _reap(budget, _candidate("a"), _candidate("z"))
    keys = list(any_redis.scan_iter("hpoq:test:budget:*"))
    assert len(keys) >= 4
    assert all(any_redis.ttl(k) > 0 for k in keys), {k: any_redis.ttl(k) for k in keys}
