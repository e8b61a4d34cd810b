"""Turns on a device: trials share it, an exclusive holder (a benchmark) has it alone and is
never starved, only holders act on their turn, and a crashed holder's turn lapses."""

from __future__ import annotations

import multiprocessing as mp
import time
from itertools import combinations
from typing import Any

import redis

from hpoq.core.coordination.device_lease import DeviceLease, device_hash
from hpoq.core.coordination.keys import RedisKeys

KEYS = RedisKeys("test")
DEVICE = "host-a/cuda:0"


def _lease(client: redis.Redis, device: str = DEVICE) -> DeviceLease:
    return DeviceLease(client, KEYS, device)


def test_trials_share_and_an_exclusive_request_waits_for_them(any_redis: redis.Redis) -> None:
    lease = _lease(any_redis)
    assert lease.acquire_shared("trial-1", 60)
    assert lease.acquire_shared("trial-2", 60)
    attempt = lease.acquire_exclusive("bench", 60)
    assert not attempt.granted
    assert attempt.shared_holders == 2
    # Writers first: once a benchmark waits, no new trial starts on the device.
    assert not lease.acquire_shared("trial-3", 60)
    assert lease.state().wanted == "bench"
    assert lease.release_shared("trial-1")
    assert not lease.acquire_exclusive("bench", 60).granted
    assert lease.release_shared("trial-2")
    assert lease.acquire_exclusive("bench", 60).granted
    assert lease.state().exclusive == "bench"
    assert lease.state().wanted is None
    assert not lease.acquire_shared("trial-3", 60)
    assert lease.release_exclusive("bench")
    assert lease.acquire_shared("trial-3", 60)
    assert lease.state().shared == ("trial-3",)


def test_a_second_exclusive_request_queues_behind_the_first(any_redis: redis.Redis) -> None:
    lease = _lease(any_redis)
    assert lease.acquire_shared("trial", 60)
    assert not lease.acquire_exclusive("bench-1", 60).granted
    second = lease.acquire_exclusive("bench-2", 60)
    assert not second.granted and second.ahead == "bench-1"
    lease.release_shared("trial")
    assert not lease.acquire_exclusive("bench-2", 60).granted  # bench-1 keeps its place
    assert lease.acquire_exclusive("bench-1", 60).granted
    held = lease.acquire_exclusive("bench-2", 60)
    assert not held.granted and held.ahead == "bench-1"
    # bench-2 is now first in line: trials stay out until it has had its turn.
    assert not lease.acquire_shared("trial", 60)
    lease.release_exclusive("bench-1")
    assert lease.acquire_exclusive("bench-2", 60).granted
    lease.release_exclusive("bench-2")
    assert lease.acquire_shared("trial", 60)


def test_only_the_holder_extends_or_releases(any_redis: redis.Redis) -> None:
    lease = _lease(any_redis)
    assert lease.acquire_exclusive("bench", 60).granted
    assert not lease.extend_exclusive("other", 60)
    assert not lease.release_exclusive("other")
    assert lease.extend_exclusive("bench", 60)
    assert lease.state().exclusive == "bench"
    assert lease.release_exclusive("bench")
    assert not lease.extend_exclusive("bench", 60)
    assert lease.acquire_shared("trial", 60)
    assert not lease.extend_shared("other", 60)
    assert lease.extend_shared("trial", 60)
    assert not lease.release_shared("other")


def test_a_withdrawn_request_lets_trials_start_again(any_redis: redis.Redis) -> None:
    lease = _lease(any_redis)
    lease.acquire_shared("trial-1", 60)
    assert not lease.acquire_exclusive("bench", 60).granted
    assert not lease.acquire_shared("trial-2", 60)
    assert not lease.release_exclusive("bench")  # it held nothing, but its request goes
    assert lease.state().wanted is None
    assert lease.acquire_shared("trial-2", 60)


def test_crashed_holders_and_requesters_lapse(any_redis: redis.Redis) -> None:
    lease = _lease(any_redis)
    assert lease.acquire_shared("dead-trial", 0.1)
    assert not lease.acquire_exclusive("dead-bench", 0.1).granted
    time.sleep(0.25)  # neither renewed: both lapse
    assert lease.state() == lease.state().__class__(None, None, ())
    assert not lease.extend_shared("dead-trial", 60)  # a stalled holder learns it lost its turn
    assert lease.acquire_exclusive("bench", 0.1).granted
    time.sleep(0.25)
    assert lease.acquire_shared("trial", 60)


def test_every_key_has_a_ttl(any_redis: redis.Redis) -> None:
    lease = _lease(any_redis)
    lease.acquire_shared("trial", 30)
    lease.acquire_exclusive("bench", 30)  # waits: sets its request
    hashed = device_hash(DEVICE)
    for key in (KEYS.device_shared(hashed), KEYS.device_exclusive_wanted(hashed)):
        assert 0 < int(any_redis.pttl(key)) <= 30_000
    lease.release_shared("trial")
    assert lease.acquire_exclusive("bench", 30).granted
    assert 0 < int(any_redis.pttl(KEYS.device_exclusive(hashed))) <= 30_000


def test_devices_are_independent(any_redis: redis.Redis) -> None:
    gpu0, gpu1 = _lease(any_redis, "host-a/cuda:0"), _lease(any_redis, "host-a/cuda:1")
    assert gpu0.acquire_shared("trial", 60)
    assert gpu1.acquire_exclusive("bench", 60).granted
    assert not _lease(any_redis, "host-b/cuda:0").state().shared


# --- several processes on a real Redis ----------------------------------------------


def _turns(
    url: str,
    owner: str,
    exclusive: bool,
    count: int,
    start_together: Any,
    queue: mp.Queue,  # type: ignore[type-arg]
) -> None:
    lease = DeviceLease(redis.Redis.from_url(url, decode_responses=True), KEYS, DEVICE)
    lease.state()  # connected and scripts loaded before the start
    start_together.wait(timeout=120)
    intervals = []
    for n in range(count):
        me = f"{owner}-{n}"
        if exclusive:
            while not lease.acquire_exclusive(me, 30).granted:
                time.sleep(0.005)
        else:
            while not lease.acquire_shared(me, 30):
                time.sleep(0.005)
        start = time.time()
        time.sleep(0.05)
        end = time.time()
        if exclusive:
            lease.release_exclusive(me)
        else:
            lease.release_shared(me)
        intervals.append((start, end))
        time.sleep(0.01)
    queue.put((owner, exclusive, intervals))


def test_processes_sharing_a_device_never_overlap_an_exclusive_turn(
    real_redis: redis.Redis, redis_url: str
) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    plan = [("trial-a", False, 12), ("trial-b", False, 12), ("trial-c", False, 12)]
    plan += [("bench", True, 4)]
    barrier = ctx.Barrier(len(plan))
    procs = [ctx.Process(target=_turns, args=(redis_url, *p, barrier, queue)) for p in plan]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    shared = [i for _, exclusive, got in results if not exclusive for i in got]
    alone = [i for _, exclusive, got in results if exclusive for i in got]
    assert len(shared) == 36 and len(alone) == 4  # nobody starved

    def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    assert not any(overlap(a, s) for a in alone for s in shared)
    assert any(overlap(a, b) for a, b in combinations(shared, 2))  # trials did share
