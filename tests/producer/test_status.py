"""`hpoq status` says where each variant stands, why one stopped and how to finish it, and
counts dead letters."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from hpoq.core.coordination.dead_letters import DeadLetters
from hpoq.producer.status import cluster_status
from hpoq.workers.trial_runner import execute_trial
from tests.integration.inprocess import World


def test_a_variant_that_stopped_short_is_listed_with_the_command_that_finishes_it(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "5")
    world = World.create(
        tmp_path, real_redis, redis_url, n_trials=2, hpo_extra={"max_failed_trials": 0}
    )
    first, second = world.submit()
    assert execute_trial(first, world.ctx).status == "completed"
    import hpoq.workers.objectives.cheap as cheap

    def boom(*args: object) -> float:
        raise RuntimeError("diverged")

    monkeypatch.setattr(cheap, "objective", boom)
    assert execute_trial(second, world.ctx).replacement is None
    DeadLetters(real_redis).add("envelope is not JSON", "hpo", b"\xff")

    report = cluster_status(world.services, world.experiment, "exp dir/exp.yaml")
    [row] = report["variants"]
    assert row["state"] == "finished with failures"
    assert (row["finished"], row["failed"], row["n_trials"]) == (1, 1, 2)
    assert "max_failed_trials (0)" in row["reason"]
    assert row["command"] == "hpoq submit 'exp dir/exp.yaml' --backbone tiny --variant 1"
    assert report["incomplete_variants"] == [row]
    assert report["dead_letters"]["count"] == 1
    assert report["dead_letters"]["recent"][0]["reason"] == "envelope is not JSON"
