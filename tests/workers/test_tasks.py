"""The Celery tasks in one process (`apply`): a job that failed for good is a FAILURE task
with the error text, once MLflow and Redis hold the failure; a malformed payload is a
rejected FAILURE; a job that worked returns its outcome."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import redis

from hpoq.errors import JobFailed, JobRejected
from tests.integration.inprocess import World, finished_sweep


@pytest.fixture
def tasks(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> ModuleType:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)  # the module builds its app at import
    return importlib.import_module("hpoq.workers.tasks")


def test_a_failed_benchmark_fails_its_task_after_recording_the_failure(
    tmp_path: Path,
    real_redis: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tasks: ModuleType,
) -> None:
    world = finished_sweep(tmp_path, real_redis, redis_url, monkeypatch)
    monkeypatch.setattr(tasks, "_context", world.ctx)
    [job] = world.benchmark()
    layout = world.runtime.layout
    checkpoint = layout.trial_dir("tiny", job.study_name, job.trial_number) / "checkpoint"
    (checkpoint / "cheap_checkpoint.json").write_text("{corrupt")

    result = tasks.run_benchmark.apply(args=[job.to_payload()], task_id=job.job_id)

    assert result.state == "FAILURE"
    assert isinstance(result.result, JobFailed) and not isinstance(result.result, JobRejected)
    text = str(result.result)
    assert text.startswith(f"benchmark of {job.benchmark_key} failed: ")
    assert "checkpoint" in text
    [run] = world.runs(world.experiment.benchmark_experiment_name)
    assert run.info.status == "FAILED" and f"MLflow run {run.info.run_id}" in text
    assert run.data.tags[world.experiment.tags.benchmark.error] in text
    assert real_redis.hexists(world.services.keys.failed_benchmarks(), job.benchmark_key)


def test_a_trial_whose_objective_failed_fails_its_task(
    tmp_path: Path,
    real_redis: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tasks: ModuleType,
) -> None:
    import hpoq.workers.objectives.cheap as cheap

    world = World.create(tmp_path, real_redis, redis_url, n_trials=2)
    monkeypatch.setattr(tasks, "_context", world.ctx)
    first, second = world.submit()
    done = tasks.run_trial.apply(args=[first.to_payload()], task_id=first.job_id)
    assert done.state == "SUCCESS" and done.result["status"] == "completed"

    def diverges(*args: object) -> float:
        raise RuntimeError("loss diverged")

    monkeypatch.setattr(cheap, "objective", diverges)
    failed = tasks.run_trial.apply(args=[second.to_payload()], task_id=second.job_id)

    assert failed.state == "FAILURE" and isinstance(failed.result, JobFailed)
    [run] = [
        r for r in world.runs(world.experiment.hpo_experiment_name) if r.info.status == "FAILED"
    ]
    assert str(failed.result) == (
        f"trial 1 of hpo_tiny failed: RuntimeError: loss diverged (MLflow run {run.info.run_id})"
    )
    assert "loss diverged" in run.data.tags[world.experiment.tags.benchmark.error]


def test_a_malformed_payload_is_a_rejected_task(tasks: ModuleType) -> None:
    for task in (tasks.run_trial, tasks.run_benchmark):
        result = task.apply(args=[{"not": "a job"}], task_id="malformed-1")
        assert result.state == "FAILURE" and isinstance(result.result, JobRejected)
        assert str(result.result).startswith("rejected: malformed ")


def test_failed_jobs_are_expected_errors_that_are_never_retried(tasks: ModuleType) -> None:
    for task in (tasks.run_trial, tasks.run_benchmark):
        assert JobFailed in task.throws  # FAILURE without a logged traceback
        assert not getattr(task, "autoretry_for", ())
        assert task.acks_late and task.app.conf.task_acks_on_failure_or_timeout


def test_a_rejected_final_training_leaves_its_entry_failed_not_queued(
    tmp_path: Path,
    real_redis: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tasks: ModuleType,
) -> None:
    import json

    from hpoq.core.coordination.final_registry import FinalRegistry

    world = World.create(tmp_path, real_redis, redis_url, n_trials=1)
    monkeypatch.setattr(tasks, "_context", world.ctx)
    registry = FinalRegistry(world.redis, world.ctx.keys)
    registry.put("tiny:spec:exec", "queued", json.dumps({"job_id": "final-bad"}))
    registry.put("tiny:spec:other", "queued", json.dumps({"job_id": "final-good"}))

    result = tasks.run_final_training.apply(args=[{"not": "a job"}], task_id="final-bad")

    assert result.state == "FAILURE" and isinstance(result.result, JobRejected)
    rejected, untouched = registry.get("tiny:spec:exec"), registry.get("tiny:spec:other")
    assert rejected is not None and rejected.state == "failed"
    assert (rejected.error or "").startswith("rejected: malformed ")
    assert untouched is not None and untouched.state == "queued"
