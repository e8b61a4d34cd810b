"""Variant numbers are unique under real concurrency and never fall below the floor."""

from __future__ import annotations

import multiprocessing as mp

import redis

from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.coordination.variant_counter import VariantCounter

KEYS = RedisKeys("test")


def test_allocation_respects_the_floor(any_redis: redis.Redis) -> None:
    counter = VariantCounter(any_redis, KEYS)
    assert counter.allocate("bert", "hpo_bert", floor=0) == 1
    assert counter.allocate("bert", "hpo_bert", floor=5) == 6  # found v5 elsewhere
    assert counter.allocate("bert", "hpo_bert", floor=2) == 7  # never goes back
    assert counter.allocate("other", "hpo_other", floor=0) == 1


def _allocate_many(url: str, count: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    client = redis.Redis.from_url(url, decode_responses=True)
    counter = VariantCounter(client, KEYS)
    queue.put([counter.allocate("bert", "hpo_bert", floor=0) for _ in range(count)])


def test_concurrent_processes_never_share_a_number(real_redis: redis.Redis, redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate_many, args=(redis_url, 25, queue)) for _ in range(8)]
    for proc in procs:
        proc.start()
    numbers = [n for _ in procs for n in queue.get(timeout=60)]
    for proc in procs:
        proc.join(timeout=60)
    assert sorted(numbers) == list(range(1, 201))
