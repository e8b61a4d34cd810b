"""The registry of watched variants: registered with its pending jobs in one step, retired
only once nothing of the variant is pending or claimed."""

from __future__ import annotations

import redis

from hpoq.core.coordination.active_variants import ActiveVariants
from hpoq.core.coordination.budget import TrialBudget
from hpoq.core.coordination.keys import RedisKeys

KEYS = RedisKeys("test")


def test_register_records_the_pending_jobs_in_the_same_step(any_redis: redis.Redis) -> None:
    variants = ActiveVariants(any_redis, KEYS)
    variants.register("v1", '{"job": 1}', ["a", "b"])
    assert variants.variants() == {"v1": '{"job": 1}'}
    assert any_redis.zrange(KEYS.budget_pending("v1"), 0, -1) == ["a", "b"]
    assert any_redis.ttl(KEYS.active_variants()) > 0 and any_redis.ttl(KEYS.budget_pending("v1"))


def test_retire_waits_until_nothing_is_pending_or_claimed(any_redis: redis.Redis) -> None:
    variants = ActiveVariants(any_redis, KEYS)
    budget = TrialBudget(any_redis, KEYS)
    variants.register("v1", "{}", ["a"])
    assert not variants.retire("v1")  # a is queued
    budget.claim("v1", "a", 5, [], 60)
    budget.mark_done("v1", "a")  # no longer pending, still claimed
    assert not variants.retire("v1")
    budget.release("v1", "a", counted=True)
    assert variants.retire("v1") and variants.variants() == {}
    assert not variants.retire("v1")  # once
