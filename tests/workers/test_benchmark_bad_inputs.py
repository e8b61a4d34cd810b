"""Bad input at benchmark time: a checkpoint that is missing (here and in MLflow) or not a
usable checkpoint, and an MLflow run tagged with the key that holds no result.

A corrupt checkpoint file is covered in test_benchmark_job.py
(test_a_failed_benchmark_frees_its_key_and_retry_failed_reruns_exactly_it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import redis

from hpoq.config.tags import BENCHMARK_KEY_TAG
from hpoq.core.benchmark_dispatch import measured_keys
from hpoq.core.benchmark_index import read_cache
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.measured_keys import finished_keys
from hpoq.core.tracking import artifact_root, ensure_experiment
from hpoq.workers.benchmark_job import checkpoint_dir, execute_benchmark
from tests.integration.inprocess import World, finished_sweep


@pytest.fixture
def world(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> World:
    return finished_sweep(tmp_path, real_redis, redis_url, monkeypatch)


def _bench_runs(world: World) -> list[Any]:
    return world.runs(world.experiment.benchmark_experiment_name)


def _break_missing_everywhere(world: World, checkpoint: Path) -> None:
    shutil.rmtree(checkpoint)
    shutil.rmtree(world.runtime.layout.root / "mlartifacts")  # no copy to download either


def _break_empty(world: World, checkpoint: Path) -> None:
    for child in checkpoint.iterdir():
        child.unlink()


def _break_not_a_directory(world: World, checkpoint: Path) -> None:
    shutil.rmtree(checkpoint)
    checkpoint.write_text("not a checkpoint")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_break_missing_everywhere, "is missing here and run"),
        (_break_empty, "has no cheap_checkpoint.json"),
        (_break_not_a_directory, "is not a directory"),
    ],
    ids=["missing-everywhere", "empty", "not-a-directory"],
)
def test_a_missing_or_unusable_checkpoint_fails_the_benchmark_clearly_and_frees_the_key(
    world: World, breakage: Any, message: str
) -> None:
    [job] = world.benchmark()
    breakage(world, checkpoint_dir(job, world.ctx))
    outcome = execute_benchmark(job, world.ctx)
    assert outcome.status == "failed"
    assert message in (outcome.error or "")
    [run] = _bench_runs(world)
    assert run.info.status == "FAILED" and run.data.tags[BENCHMARK_KEY_TAG] == job.benchmark_key
    assert message in run.data.tags["hpoq.error"]
    assert read_cache(world.runtime.layout, job.benchmark_key) is None
    assert world.redis.hexists(world.services.keys.failed_benchmarks(), job.benchmark_key)
    assert BenchmarkLeases(world.redis, world.services.keys).holder(job.benchmark_key) is None
    # Not counted as measured: the next `hpoq benchmark` enqueues it again.
    assert [j.benchmark_key for j in world.benchmark()] == [job.benchmark_key]


def _tagged_run_without_metrics(world: World, key: str) -> str:
    """A FINISHED run tagged with the key and nothing else: logged by hand, or by a client
    that died between creating the run and logging its result."""
    client = world.services.mlflow()
    location = artifact_root(world.runtime.layout, world.runtime.mlflow_uri())
    experiment_id = ensure_experiment(client, world.experiment.benchmark_experiment_name, location)
    run = client.create_run(experiment_id, tags={BENCHMARK_KEY_TAG: key})
    client.set_terminated(run.info.run_id, status="FINISHED")
    return str(run.info.run_id)


def test_a_finished_run_with_the_key_tag_but_no_metrics_is_not_a_measurement(
    world: World,
) -> None:
    [job] = world.benchmark()
    empty = _tagged_run_without_metrics(world, job.benchmark_key)
    client = world.services.mlflow()
    keys = [job.benchmark_key]
    assert finished_keys(client, world.experiment.benchmark_experiment_name, keys) == {}
    runtime = world.runtime
    assert measured_keys(world.experiment, runtime, client, [job.benchmark_key]) == set()
    # The worker does not take it for a result either: it measures.
    outcome = execute_benchmark(job, world.ctx)
    assert outcome.status == "measured" and outcome.run_id != empty
    found = finished_keys(client, world.experiment.benchmark_experiment_name, keys)
    assert found == {job.benchmark_key: outcome.run_id}
    assert world.benchmark() == []  # now it is measured: nothing more to enqueue


def test_a_run_with_the_key_tag_and_no_metrics_does_not_stop_a_producer(world: World) -> None:
    [job] = world.benchmark()
    world.redis.delete(*world.redis.keys("hpoq:*:bench-lease:*"))  # the queued job was lost
    _tagged_run_without_metrics(world, job.benchmark_key)
    [again] = world.benchmark()
    assert again.benchmark_key == job.benchmark_key
