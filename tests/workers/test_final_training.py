"""A final-training job in process, on a real Redis and MLflow and the built-in trainer:
a failure is recorded (FAILED run with the error, `hpoq status` names it and the command
that retries it), the retry trains and publishes the model, a redelivery does no work, and
the final model's benchmark is enqueued once."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from hpoq.api import retrieve_final_models
from hpoq.core.content_store import CHECKPOINT_ARTIFACT_PATH, digest_tag
from hpoq.core.coordination.final_registry import FinalRegistry, entry_field
from hpoq.core.jobs import FinalTrainingJob, parse_job
from hpoq.producer.final_training import retry_failed_final, train_final
from hpoq.producer.local_run import RunReport, _final_failures
from hpoq.producer.status import cluster_status
from hpoq.workers.final_training import (
    FinalLeaseLost,
    FinalTrainingInFlight,
    benchmark_final,
    execute_final_training,
    final_checkpoint_dir,
)
from hpoq.workers.trial_runner import execute_trial
from tests.integration.inprocess import World, drain


def _queued(world: World) -> list[FinalTrainingJob]:
    return [parse_job(p, FinalTrainingJob) for _, p in drain(world.redis, "train")]


def test_a_failed_final_training_is_listed_retried_then_trained_once(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "5")
    world = World.create(tmp_path, real_redis, redis_url, n_trials=2, final_training={"epochs": 2})
    for job in world.submit():
        execute_trial(job, world.ctx)
    plan = train_final(world.experiment, world.services)
    [job] = _queued(world)
    assert [i.job_id for i in plan.items] == [job.job_id] and job.study_name == "final_tiny"

    import hpoq.workers.training.trainer as trainer

    def diverged(*args: object, **kwargs: object) -> None:
        raise RuntimeError("loss is nan")

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "fit", diverged)
        failed = execute_final_training(job, world.ctx)
    assert failed.status == "failed" and "loss is nan" in (failed.error or "")
    [run] = world.runs(world.experiment.final_experiment_name)
    assert run.info.status == "FAILED" and "loss is nan" in run.data.tags["hpoq.error"]
    [row] = cluster_status(world.services, world.experiment, "exp.yaml")["final_trainings"]
    assert (row["state"], row["study_name"]) == ("failed", "final_tiny")
    assert row["command"] == "hpoq train-final exp.yaml --retry-failed"
    [failure] = _final_failures(world.services, world.experiment, RunReport("exp", [], logs="L"))
    assert failure["what"] == "final_training" and "loss is nan" in failure["error"]

    assert [i.action for i in retry_failed_final(world.services, world.experiment).items] == [
        "retried"
    ]
    [again] = _queued(world)
    assert again.study_name == job.study_name and again.job_id != job.job_id
    registry = FinalRegistry(world.redis, world.ctx.keys)
    field = entry_field("tiny", again.spec_fp, again.exec_fp)
    registry.acquire(field, "other-delivery@host:1", 60)
    with pytest.raises(FinalTrainingInFlight):  # another delivery is training it
        execute_final_training(again, world.ctx)
    registry.release(field, "other-delivery@host:1")
    trained = execute_final_training(again, world.ctx)
    assert trained.status == "trained", trained.error
    finished = [
        r for r in world.runs(world.experiment.final_experiment_name) if r.info.status == "FINISHED"
    ]
    assert [r.info.run_id for r in finished] == [trained.run_id]
    assert finished[0].data.tags[digest_tag(CHECKPOINT_ARTIFACT_PATH)]
    assert (final_checkpoint_dir(world.ctx, "tiny", "final_tiny") / "config.json").is_file()
    status = cluster_status(world.services, world.experiment, "exp.yaml")
    assert [r["state"] for r in status["final_trainings"]] == ["finished"]

    redelivered = execute_final_training(again, world.ctx)  # the same message once more
    assert (redelivered.status, redelivered.run_id) == ("already_done", trained.run_id)
    assert len(world.runs(world.experiment.final_experiment_name)) == 2  # FAILED + FINISHED

    assert len(benchmark_final(again, world.ctx, world.services.celery)) == 1
    assert benchmark_final(again, world.ctx, world.services.celery) == []  # in flight
    [bench] = world.queued_benchmarks()
    assert (bench.study_name, bench.run_id) == ("final_tiny", trained.run_id)
    assert train_final(world.experiment, world.services).job_ids == []  # reused
    registry.put(field, "failed", again.model_dump_json(), error="a late word")
    assert retry_failed_final(world.services, world.experiment).items == []  # trained already
    entry = registry.get(field)
    assert entry is not None and entry.state == "finished"
    [model] = retrieve_final_models(world.experiment, world.runtime)
    assert (model["name"], model["run_id"]) == ("final_tiny", trained.run_id)
    assert model["checkpoint"]["digest"] and "test.macro-f1" in model["metrics"]


def test_a_delivery_whose_lease_was_taken_over_records_nothing(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "30")
    world = World.create(tmp_path, real_redis, redis_url, n_trials=1, final_training={"epochs": 1})
    for job in world.submit():
        execute_trial(job, world.ctx)
    train_final(world.experiment, world.services)
    [job] = _queued(world)
    registry = FinalRegistry(world.redis, world.ctx.keys)
    field = entry_field("tiny", job.spec_fp, job.exec_fp)

    import hpoq.workers.training.trainer as trainer

    real_fit = trainer.fit

    def stalled_past_its_lease(*args: object, **kwargs: object) -> None:
        real_fit(*args, **kwargs)  # type: ignore[arg-type]
        world.redis.delete(registry._alive_key(field))  # the lease lapsed meanwhile...
        assert registry.acquire(field, "other-delivery@host:1", 60)  # ...and was taken

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "fit", stalled_past_its_lease)
        with pytest.raises(FinalLeaseLost):
            execute_final_training(job, world.ctx)
    assert registry.holder(field) == "other-delivery@host:1"  # its lease left alone
    [run] = world.runs(world.experiment.final_experiment_name)
    assert run.info.status == "FAILED"
    assert not final_checkpoint_dir(world.ctx, "tiny", "final_tiny").exists()
    entry = registry.get(field)
    assert entry is not None and entry.state == "running"  # the holder's word is awaited
