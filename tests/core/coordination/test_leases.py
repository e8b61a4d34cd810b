"""Benchmark leases: one holder, compare-and-act only, lapse on crash, fences only grow."""

from __future__ import annotations

import multiprocessing as mp
import time

import redis

from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.coordination.leases import BenchmarkLeases, key_hash

KEYS = RedisKeys("test")
KEY = "bert:hpo_bert:run:trial:aaaa:bbbb"


def test_one_holder_at_a_time(any_redis: redis.Redis) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    assert leases.acquire(KEY, "a", 60)
    assert not leases.acquire(KEY, "b", 60)
    assert leases.holder(KEY) == "a"


def test_a_late_finisher_cannot_release_someone_elses_lease(any_redis: redis.Redis) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    leases.acquire(KEY, "old", 0.05)
    time.sleep(0.1)  # old's lease lapsed (its worker stalled or died)
    assert leases.acquire(KEY, "new", 60)
    assert not leases.release(KEY, "old")
    assert not _beat(leases, "old", 60)
    assert leases.holder(KEY) == "new"
    assert leases.release(KEY, "new")
    assert leases.holder(KEY) is None


def test_transfer_hands_over_only_from_the_expected_owner(any_redis: redis.Redis) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    leases.acquire(KEY, "job-1", 60)
    assert not leases.transfer(KEY, "job-2", "job-2@w", 60)
    assert leases.transfer(KEY, "job-1", "job-1@w", 60)
    assert leases.holder(KEY) == "job-1@w"
    leases.release(KEY, "job-1@w")
    assert leases.transfer(KEY, "job-1", "job-1@w2", 60)  # lapsed: free to take


def test_heartbeat_keeps_a_lease_alive(any_redis: redis.Redis) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    leases.acquire(KEY, "a", 0.2)
    for _ in range(3):
        time.sleep(0.1)
        assert _beat(leases, "a", 0.2)
    assert leases.holder(KEY) == "a"


def _beat(leases: BenchmarkLeases, owner: str, ttl_s: float, fence: int = 1) -> bool:
    return leases.heartbeat(KEY, owner, ttl_s, fence=fence, job_id="job-1", job='{"j": 1}')


def test_a_holder_takes_its_lapsed_lease_back_unless_a_newer_job_holds_the_key(
    any_redis: redis.Redis,
) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    fence = leases.next_fence(KEY)
    leases.acquire(KEY, "job-1@w", 0.05)
    time.sleep(0.1)  # the holder stalled past its lease; nobody took the key
    assert _beat(leases, "job-1@w", 60, fence)
    assert leases.holder(KEY) == "job-1@w"
    leases.release(KEY, "job-1@w")
    newer = leases.next_fence(KEY)  # the reaper enqueued the key again
    leases.acquire(KEY, "job-2", 60)
    assert not _beat(leases, "job-1@w", 60, fence)
    leases.release(KEY, "job-2")
    assert not _beat(leases, "job-1@w", 60, fence)  # a newer fence exists: lost for good
    assert leases.current_fence(KEY) == newer


def test_after_redis_lost_its_data_the_holder_writes_back_lease_fence_and_registry(
    any_redis: redis.Redis,
) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    fence = leases.next_fence(KEY)
    leases.register("job-1", '{"j": 1}')
    leases.transfer(KEY, "job-1", "job-1@w", 60)
    for key in any_redis.scan_iter("hpoq:test:*"):
        any_redis.delete(key)  # the wipe
    assert _beat(leases, "job-1@w", 60, fence)
    assert leases.holder(KEY) == "job-1@w"
    assert leases.current_fence(KEY) == fence
    assert leases.jobs() == {"job-1": '{"j": 1}'}
    assert leases.next_fence(KEY) == fence + 1  # fences still only grow


def test_finish_leaves_the_registry_and_releases_only_its_own_lease(
    any_redis: redis.Redis,
) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    leases.register("job-1", "{}")
    leases.register("job-2", "{}")
    leases.acquire(KEY, "job-2", 60)
    assert not leases.finish(KEY, "job-1@w", "job-1")  # superseded: not its lease
    assert leases.holder(KEY) == "job-2" and set(leases.jobs()) == {"job-2"}
    assert leases.finish(KEY, "job-2", "job-2")
    assert leases.holder(KEY) is None and leases.jobs() == {}


def test_fences_only_grow(any_redis: redis.Redis) -> None:
    leases = BenchmarkLeases(any_redis, KEYS)
    assert leases.current_fence(KEY) == 0
    assert [leases.next_fence(KEY) for _ in range(3)] == [1, 2, 3]
    assert leases.current_fence(KEY) == 3


def _contend(url: str, owner: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    leases = BenchmarkLeases(redis.Redis.from_url(url, decode_responses=True), KEYS)
    queue.put((owner, leases.acquire(KEY, owner, 60)))


def test_ten_processes_racing_for_one_lease_yield_one_winner(
    real_redis: redis.Redis, redis_url: str
) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(redis_url, f"p{i}", queue)) for i in range(10)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    winners = [owner for owner, won in results if won]
    assert len(winners) == 1
    assert real_redis.get(KEYS.benchmark_lease(key_hash(KEY))) == winners[0]
