"""The final-training registry: the `alive` key is an owned lease (one holder, renewed and
released by its owner only), and a worker's word lands only on an entry holding its job."""

from __future__ import annotations

import json

import redis

from hpoq.core.coordination.final_registry import FinalRegistry
from hpoq.core.coordination.keys import RedisKeys

KEYS = RedisKeys("test")
FIELD = "bert:spec:exec"


def _job(job_id: str) -> str:
    return json.dumps({"job_id": job_id, "study_name": "final_bert"})


def test_one_delivery_holds_a_final_training_at_a_time(any_redis: redis.Redis) -> None:
    registry = FinalRegistry(any_redis, KEYS)
    assert registry.acquire(FIELD, "final-1@a:1", 60)
    assert not registry.acquire(FIELD, "final-1@b:2", 60)  # a second delivery is refused
    assert registry.holder(FIELD) == "final-1@a:1"
    assert registry.renew(FIELD, "final-1@a:1", 60)
    assert not registry.renew(FIELD, "final-1@b:2", 60)  # not its lease: not extended
    assert not registry.release(FIELD, "final-1@b:2")  # nor removed
    assert registry.holders([FIELD, "other:x:y"]) == ["final-1@a:1", None]
    assert registry.release(FIELD, "final-1@a:1")
    assert registry.holder(FIELD) is None
    assert not registry.renew(FIELD, "final-1@a:1", 60)  # a lapsed lease is not revived


def test_a_late_finisher_never_removes_the_new_holders_lease(any_redis: redis.Redis) -> None:
    registry = FinalRegistry(any_redis, KEYS)
    assert registry.acquire(FIELD, "old", 60)
    any_redis.delete(_alive(registry))  # what a lapsed lease leaves
    assert registry.acquire(FIELD, "new", 60)
    assert not registry.release(FIELD, "old")
    assert registry.holder(FIELD) == "new"


def test_a_worker_never_overwrites_a_newer_job(any_redis: redis.Redis) -> None:
    registry = FinalRegistry(any_redis, KEYS)
    assert registry.put_if_job(FIELD, "final-1", "running", _job("final-1"))  # nothing yet
    registry.put(FIELD, "queued", _job("final-2"))  # force_new or a retry, meanwhile
    assert not registry.put_if_job(FIELD, "final-1", "failed", _job("final-1"), error="late")
    entry = registry.get(FIELD)
    assert entry is not None and (entry.state, entry.job_id) == ("queued", "final-2")
    assert registry.put_if_job(FIELD, "final-2", "finished", _job("final-2"))
    entry = registry.get(FIELD)
    assert entry is not None and (entry.state, entry.job_id) == ("finished", "final-2")


def _alive(registry: FinalRegistry) -> str:
    return registry._alive_key(FIELD)
