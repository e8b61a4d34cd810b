"""A worker process keeps its study stores and MLflow experiment ids between jobs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from hpoq.config.hpo import CheckpointConfig
from hpoq.core.content_store import CONTENT_EXPERIMENT
from hpoq.workers.context import MAX_CACHED_STORES
from hpoq.workers.trial_runner import execute_trial
from tests.integration.inprocess import World

pytestmark = pytest.mark.redis


@pytest.fixture
def world(tmp_path: Path, real_redis: redis.Redis, redis_url: str) -> World:
    return World.create(tmp_path, real_redis, redis_url, n_trials=3)


def test_one_study_store_per_checkpoint_config(world: World) -> None:
    checkpoint = world.experiment.hpo.checkpoint
    same = CheckpointConfig.model_validate(checkpoint.model_dump())
    assert world.ctx.study_store(checkpoint) is world.ctx.study_store(same)
    other = checkpoint.model_copy(update={"storage_path": "{study_name}/other.journal"})
    assert world.ctx.study_store(other) is not world.ctx.study_store(checkpoint)


def test_the_store_cache_is_bounded(world: World) -> None:
    base = world.experiment.hpo.checkpoint
    for n in range(MAX_CACHED_STORES + 3):
        world.ctx.study_store(base.model_copy(update={"storage_path": f"{{study_name}}/{n}.db"}))
    assert len(world.ctx._study_stores) == MAX_CACHED_STORES


class CountingLookups:
    """Counts MLflow experiment lookups; everything else goes to the real client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lookups: Counter[str] = Counter()

    def get_experiment_by_name(self, name: str) -> Any:
        self.lookups[name] += 1
        return self.client.get_experiment_by_name(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_trial_jobs_look_their_experiment_up_once_per_process(world: World) -> None:
    counting = CountingLookups(world.ctx.mlflow)
    world.ctx.mlflow = counting  # type: ignore[misc]
    jobs = world.submit()
    outcomes = [execute_trial(job, world.ctx) for job in jobs]
    assert [o.status for o in outcomes] == ["completed"] * 3
    # The trials' experiment, and the one the jobs' data was published to (fetched once).
    assert counting.lookups == {world.experiment.hpo_experiment_name: 1, CONTENT_EXPERIMENT: 1}


def test_a_stale_experiment_id_is_dropped_after_mlflow_refuses_it(world: World) -> None:
    first, second, _ = world.submit()
    name = world.experiment.hpo_experiment_name
    world.ctx._experiment_ids[name] = "987654"  # an experiment that no longer exists
    refused = execute_trial(first, world.ctx)  # the trial fails; its replacement is pending
    assert refused.status == "failed" and "987654" in (refused.error or "")
    assert refused.replacement == f"{first.job_id}.r1"
    assert name not in world.ctx._experiment_ids
    # The next job looks the experiment up again and runs.
    assert execute_trial(second, world.ctx).status == "completed"
    assert world.ctx._experiment_ids[name] != "987654"
