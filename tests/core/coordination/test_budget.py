"""The trial budget's contract, on fakeredis and on a real Redis."""

from __future__ import annotations

import time

import redis

from hpoq.core.coordination.budget import Claim, TrialBudget
from hpoq.core.coordination.keys import RedisKeys

KEYS = RedisKeys("test")
STUDY = "study-key"


def test_claims_stop_at_n_trials_counting_running_and_finished(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    granted = [budget.claim(STUDY, f"j{i}", 3, [], 60) for i in range(5)]
    assert granted == [Claim.GRANTED] * 3 + [Claim.BUDGET_FULL] * 2
    budget.release(STUDY, "j0", counted=True)
    assert budget.claim(STUDY, "j3", 3, [], 60) is Claim.BUDGET_FULL  # 1 finished + 2 running


def test_failed_trial_frees_its_slot(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "a", 1, [], 60) is Claim.GRANTED
    budget.release(STUDY, "a", counted=False)
    assert budget.claim(STUDY, "b", 1, [], 60) is Claim.GRANTED


def test_same_job_twice_is_in_flight_then_done(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "a", 5, [], 60) is Claim.GRANTED
    assert budget.claim(STUDY, "a", 5, [], 60) is Claim.IN_FLIGHT
    budget.release(STUDY, "a", counted=True)
    assert budget.claim(STUDY, "a", 5, [], 60) is Claim.ALREADY_DONE


def test_release_counts_a_trial_once(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.claim(STUDY, "a", 5, [], 60)
    assert budget.release(STUDY, "a", counted=True) == 1
    assert budget.release(STUDY, "a", counted=True) == 1


def test_lapsed_claim_frees_the_slot(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    assert budget.claim(STUDY, "dead", 1, [], 0.05) is Claim.GRANTED
    assert budget.claim(STUDY, "b", 1, [], 60) is Claim.BUDGET_FULL
    time.sleep(0.1)
    assert not budget.claim_is_live(STUDY, "dead")
    assert budget.claim(STUDY, "b", 1, [], 60) is Claim.GRANTED


def test_heartbeat_extends_only_a_held_claim(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.claim(STUDY, "a", 2, [], 0.2)
    assert budget.heartbeat(STUDY, "a", 60)
    time.sleep(0.3)
    assert budget.claim_is_live(STUDY, "a")
    assert not budget.heartbeat(STUDY, "never-claimed", 60)


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


def test_status_drops_done_and_lost_pending_jobs(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    budget.add_pending(STUDY, ["a", "b", "c"])
    budget.claim(STUDY, "a", 5, [], 60)
    budget.release(STUDY, "a", counted=True)
    assert budget.status(STUDY, lost_after_s=60).pending == 2
    time.sleep(0.05)
    status = budget.status(STUDY, lost_after_s=0.01)  # b and c: old, unclaimed -> lost
    assert (status.finished, status.running, status.pending) == (1, 0, 0)


def test_mark_done_reports_the_first_caller_only(any_redis: redis.Redis) -> None:
    budget = TrialBudget(any_redis, KEYS)
    assert budget.mark_done(STUDY, "x")
    assert not budget.mark_done(STUDY, "x")
    assert budget.claim(STUDY, "x", 5, [], 60) is Claim.ALREADY_DONE
