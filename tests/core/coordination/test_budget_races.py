"""Claims, heartbeats, stalls and the reaper racing in several processes on a real Redis:
a variant never counts more than n_trials, and no reaped job is ever counted."""

from __future__ import annotations

import multiprocessing as mp
import random
import time

import redis

from hpoq.core.coordination.budget import Claim, ReapCandidate, TrialBudget
from hpoq.core.coordination.keys import RedisKeys

KEYS = RedisKeys("race")
STUDY = "race-study"
N_TRIALS = 6
LEASE_S = 0.3
RUN_S = 4.0


def _worker(url: str, seed: int) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    budget = TrialBudget(client, KEYS)
    rng = random.Random(seed)
    deadline = time.monotonic() + RUN_S
    number = 0
    while time.monotonic() < deadline:
        number += 1
        job = f"w{seed}-{number}"
        if budget.claim(STUDY, job, N_TRIALS, [], LEASE_S) is not Claim.GRANTED:
            time.sleep(0.02)
            continue
        if rng.random() < 0.2:
            continue  # dies: never beats, never releases
        end = time.monotonic() + rng.uniform(0.05, 0.4)
        while time.monotonic() < end:
            pause = LEASE_S / 3 if rng.random() < 0.9 else LEASE_S * 1.5  # a stall
            time.sleep(pause)
            if not budget.heartbeat(STUDY, job, LEASE_S):
                break
        if budget.heartbeat(STUDY, job, LEASE_S):  # confirm, then count
            client.rpush("race:confirmed", job)
            budget.release(STUDY, job, counted=True)
        else:  # reaped while it stalled: it must publish nothing
            client.rpush("race:lost", job)
            assert not budget.release(STUDY, job, counted=True)


def _reaper(url: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    budget = TrialBudget(client, KEYS)
    deadline = time.monotonic() + RUN_S + 1
    while time.monotonic() < deadline:
        jobs = budget.claimed_jobs(STUDY)
        reaped = budget.reap(
            STUDY,
            [ReapCandidate(j, f"{j}.r1", False) for j in jobs],
            trusted=True,
            lease_s=LEASE_S,
            replacements_allowed=0,
        )
        for item in reaped:
            client.rpush("race:reaped", item.job_id)
        time.sleep(LEASE_S / 3)


def test_racing_workers_and_reaper_never_overcount(real_redis: redis.Redis, redis_url: str) -> None:
    context = mp.get_context("spawn")
    procs = [context.Process(target=_worker, args=(redis_url, i)) for i in range(5)]
    procs.append(context.Process(target=_reaper, args=(redis_url,)))
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    confirmed = set(real_redis.lrange("race:confirmed", 0, -1))
    lost = set(real_redis.lrange("race:lost", 0, -1))
    reaped = set(real_redis.lrange("race:reaped", 0, -1))
    finished = real_redis.smembers(KEYS.budget_finished(STUDY))
    assert reaped, "the run should have reaped some dead or stalled workers"
    assert len(finished) <= N_TRIALS
    assert finished <= confirmed  # only a worker that confirmed its claim is counted
    assert not reaped & finished  # and never one the reaper took
    assert lost <= reaped
