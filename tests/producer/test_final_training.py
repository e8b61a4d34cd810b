"""Planning final trainings: the run-mode table over the variants whose spec_fp and exec_fp
match, numbers from the shared variant counter, in-flight jobs never sent twice, failed
ones retried (fakeredis and a real Redis)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from hpoq.config.base import RunMode
from hpoq.config.settings import Settings
from hpoq.core.coordination.final_registry import FinalRegistry, entry_field
from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.final_runs import FinalRun
from hpoq.core.fingerprints import trial_key_hash
from hpoq.core.jobs import QUEUE_TRAIN, TASK_RUN_FINAL_TRAINING, FinalTrainingJob
from hpoq.core.retrieval import BestTrial
from hpoq.core.runtime import Runtime
from hpoq.producer.final_training import FinalPlanItem, _Planner, retry_failed_final
from tests.factories import make_experiment, unpublished_job_experiment

KEYS = RedisKeys("final-test")
PARAMS: dict[str, Any] = {"learning_rate": 0.001, "batch_size": 8, "epochs": 2}
BEST = BestTrial(
    backbone="tiny",
    study_name="hpo_tiny",
    variant=1,
    trial_number=0,
    trial_id=trial_key_hash("tiny", "hpo_tiny", 0),
    run_id=None,
    metric="macro-f1",
    value=0.9,
    source="optuna",
)


class Sender:
    def __init__(self) -> None:
        self.sent: list[FinalTrainingJob] = []

    def send_task(self, name: str, args: Any = None, **options: Any) -> None:
        assert name == TASK_RUN_FINAL_TRAINING and options["queue"] == QUEUE_TRAIN
        self.sent.append(FinalTrainingJob.model_validate(args[0]))


@pytest.fixture
def services(tmp_path: Path, any_redis: redis.Redis) -> SimpleNamespace:
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    from hpoq.core.tracking import make_client

    return SimpleNamespace(
        redis=any_redis,
        keys=KEYS,
        runtime=runtime,
        celery=Sender(),
        mlflow=lambda: make_client(runtime.mlflow_uri()),
    )


def planner(tmp_path: Path, services: SimpleNamespace, mode: RunMode, seed: int = 0) -> _Planner:
    experiment = make_experiment(tmp_path, final_training={"seeds": [seed]})
    return _Planner(unpublished_job_experiment(experiment), services, None, mode)  # type: ignore[arg-type]


def decide(p: _Planner, runs: list[FinalRun], params: dict[str, Any] = PARAMS) -> FinalPlanItem:
    from hpoq.core.final_runs import highest_known_final_variant
    from hpoq.core.fingerprints import final_exec_fingerprint, final_spec_fingerprint

    assert p.final is not None
    backbone = p.experiment.hpo.backbone("tiny")
    spec = final_spec_fingerprint(backbone, params, p.experiment.data, p.final)
    seed = p.final.seeds[0]
    exec_fp = final_exec_fingerprint(seed=seed, **p.environment)
    floor = highest_known_final_variant(p.services.runtime.layout, "tiny", runs)
    return p._decide(BEST, params, spec, exec_fp, seed, 2, runs, floor)


def finished(item: FinalPlanItem, status: str = "FINISHED") -> FinalRun:
    return FinalRun(
        backbone="tiny",
        name=item.name,
        variant=item.variant,
        run_id=f"run{item.variant}",
        status=status,
        spec_fp=item.spec_fp,
        exec_fp=item.exec_fp,
        seed=item.seed,
        source_study_name="hpo_tiny",
        source_trial_number=0,
        source_trial_id=BEST.trial_id,
        source_run_id=None,
        metrics={},
    )


def worker_reports(services: SimpleNamespace, item: FinalPlanItem, state: str) -> None:
    job = services.celery.sent[-1]
    FinalRegistry(services.redis, KEYS).put(
        entry_field("tiny", item.spec_fp, item.exec_fp),
        state,
        job.model_dump_json(),  # type: ignore[arg-type]
    )


def test_reuse_trains_once_then_reuses_and_never_sends_a_job_in_flight(
    tmp_path: Path, services: SimpleNamespace
) -> None:
    p = planner(tmp_path, services, RunMode.REUSE_IF_EXISTS)
    first = decide(p, [])
    assert (first.action, first.name, first.variant) == ("created", "final_tiny", 1)
    assert len(services.celery.sent) == 1 and services.celery.sent[0].epochs == 2
    queued = decide(p, [])  # a second producer while the job waits on the queue
    assert (queued.action, queued.job_id) == ("in_flight", first.job_id)
    worker_reports(services, first, "finished")
    again = decide(p, [finished(first)])
    assert (again.action, again.variant, again.run_id) == ("reused", 1, "run1")
    assert len(services.celery.sent) == 1


def test_a_new_best_trial_or_seed_makes_a_new_variant(
    tmp_path: Path, services: SimpleNamespace
) -> None:
    p = planner(tmp_path, services, RunMode.REUSE_IF_EXISTS)
    first = decide(p, [])
    worker_reports(services, first, "finished")
    runs = [finished(first)]
    other_trial = decide(p, runs, {**PARAMS, "learning_rate": 0.002})
    assert (other_trial.action, other_trial.name) == ("created", "final_tiny_v2")
    assert other_trial.spec_fp != first.spec_fp and other_trial.exec_fp == first.exec_fp
    other_seed = decide(planner(tmp_path, services, RunMode.REUSE_IF_EXISTS, seed=1), runs)
    assert (other_seed.action, other_seed.name) == ("created", "final_tiny_v3")
    assert other_seed.spec_fp == first.spec_fp and other_seed.exec_fp != first.exec_fp


def test_force_new_takes_the_next_number_above_what_disk_knows(
    tmp_path: Path, services: SimpleNamespace
) -> None:
    p = planner(tmp_path, services, RunMode.FORCE_NEW)
    (services.runtime.layout.final_dir("tiny") / "final_tiny_v4").mkdir(parents=True)
    first = decide(p, [])
    assert (first.action, first.variant) == ("created", 5)
    worker_reports(services, first, "finished")
    assert decide(p, [finished(first)]).variant == 6


def test_a_failed_training_is_continued_under_its_variant_or_retried(
    tmp_path: Path, services: SimpleNamespace
) -> None:
    p = planner(tmp_path, services, RunMode.REUSE_IF_EXISTS)
    first = decide(p, [])
    worker_reports(services, first, "failed")
    runs = [finished(first, status="FAILED")]
    continued = decide(p, runs)
    assert (continued.action, continued.variant) == ("continued", 1)
    assert continued.job_id != first.job_id and len(services.celery.sent) == 2
    worker_reports(services, continued, "failed")
    retried = retry_failed_final(services)  # type: ignore[arg-type]
    assert [(i.action, i.name) for i in retried.items] == [("retried", "final_tiny")]
    assert len(services.celery.sent) == 3
    assert retry_failed_final(services).items == []  # type: ignore[arg-type]  # queued now


def test_a_running_training_is_in_flight_while_its_worker_beats_and_lost_after(
    tmp_path: Path, services: SimpleNamespace
) -> None:
    p = planner(tmp_path, services, RunMode.REUSE_IF_EXISTS)
    first = decide(p, [])
    worker_reports(services, first, "running")
    field = entry_field("tiny", first.spec_fp, first.exec_fp)
    registry = FinalRegistry(services.redis, KEYS)
    assert registry.acquire(field, "final-1@host:1", 60)
    running = [finished(first, status="RUNNING")]
    assert decide(p, running).action == "in_flight"
    registry.release(field, "final-1@host:1")  # what a lapsed heartbeat leaves
    lost = decide(p, running)
    assert (lost.action, lost.variant) == ("continued", 1)
    assert len(services.celery.sent) == 2


def test_planned_trainings_read_lost_running_and_failed_in_one_place(
    tmp_path: Path, services: SimpleNamespace
) -> None:
    from hpoq.core.final_trainings import planned_finals
    from hpoq.producer.final_training import failed_final_jobs

    p = planner(tmp_path, services, RunMode.REUSE_IF_EXISTS)
    first = decide(p, [])
    [queued] = planned_finals(services.redis, KEYS)
    assert (queued.state, queued.job.job_id) == ("queued", first.job_id)
    worker_reports(services, first, "running")
    field = entry_field("tiny", first.spec_fp, first.exec_fp)
    assert [f.state for f in planned_finals(services.redis, KEYS)] == ["lost"]
    registry = FinalRegistry(services.redis, KEYS)
    assert registry.acquire(field, "final-1@host:1", 60)
    assert [f.state for f in planned_finals(services.redis, KEYS, fields={field})] == ["running"]
    assert planned_finals(services.redis, KEYS, "another-experiment") == []
    assert planned_finals(services.redis, KEYS, fields={"other:x:y"}) == []
    FinalRegistry(services.redis, KEYS).put(
        field, "failed", services.celery.sent[-1].model_dump_json(), error="boom"
    )
    [(job, error)] = failed_final_jobs(services)  # type: ignore[arg-type]
    assert (job.job_id, error) == (first.job_id, "boom")
