"""When the reaper believes the claims: after a lease of continuous watching, never right
after Redis lost its data or after a gap in which nobody could reach it."""

from __future__ import annotations

import time

import redis

from hpoq.core.coordination.keys import REAPER_WATCH_TTL_S, RedisKeys
from hpoq.core.coordination.reaper_watch import ReaperWatch

KEYS = RedisKeys("test")
LEASE_S = 0.3


def _until_trusted(watch: ReaperWatch) -> float:
    start = time.monotonic()
    while not watch.record_pass(LEASE_S)[0]:
        assert time.monotonic() - start < 10
        time.sleep(LEASE_S / 4)
    return time.monotonic() - start


def test_a_fresh_watch_trusts_only_after_a_lease(any_redis: redis.Redis) -> None:
    watch = ReaperWatch(any_redis, KEYS)
    trusted, wait_s = watch.record_pass(LEASE_S)
    assert not trusted and 0 < wait_s <= LEASE_S
    assert _until_trusted(watch) >= LEASE_S * 0.8
    assert 0 < any_redis.ttl(KEYS.reaper_watch()) <= REAPER_WATCH_TTL_S


def test_losing_the_record_or_a_gap_in_passes_withdraws_trust(any_redis: redis.Redis) -> None:
    watch = ReaperWatch(any_redis, KEYS)
    _until_trusted(watch)
    any_redis.delete(KEYS.reaper_watch())  # Redis lost its data
    assert not watch.record_pass(LEASE_S)[0]
    _until_trusted(watch)
    time.sleep(LEASE_S)  # nobody passed for longer than 2/3 of a lease
    assert not watch.record_pass(LEASE_S)[0]


def test_finishing_a_pass_never_recreates_a_lost_record(any_redis: redis.Redis) -> None:
    watch = ReaperWatch(any_redis, KEYS)
    watch.record_pass(LEASE_S)
    any_redis.delete(KEYS.reaper_watch())
    watch.finish_pass()
    assert not any_redis.exists(KEYS.reaper_watch())
