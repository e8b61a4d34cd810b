"""The reaper in one process (real Redis, SQLite MLflow, file-journal Optuna): dead
workers' trials failed and replaced, the last one included; a finished variant retired and
benchmarked; a lapsed benchmark lease enqueued again under a new fence; nothing reaped
until the claims can be believed."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import optuna
import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.active_variants import ActiveVariants
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.jobs import TASK_RUN_BENCHMARK, TASK_RUN_TRIAL, BenchmarkJob, TrialJob, parse_job
from hpoq.core.optuna_setup import JOB_ID_ATTR, open_variant_study
from hpoq.core.reaper import LOST_REASON, Reaper, ReapReport
from hpoq.core.runtime import Runtime
from hpoq.core.trial_record import TrialRecord
from hpoq.core.trial_tracking import start_trial_run
from hpoq.core.variants import VariantRef
from hpoq.producer.submit import Submitter
from hpoq.workers.benchmark_job import execute_benchmark
from hpoq.workers.context import WorkerContext
from hpoq.workers.trial_runner import execute_trial
from tests.factories import make_experiment
from tests.queue_messages import drain

State = optuna.trial.TrialState
REAPER_LEASE_S = 0.3


class Sent:
    """A task sender that keeps what it is given (the jobs are run in process)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, args: Any = (), **options: Any) -> None:
        self.tasks.append((name, args[0]))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [payload for task, payload in self.tasks if task == name]


class World:
    def __init__(self, tmp_path: Path, client: redis.Redis, url: str, n_trials: int) -> None:
        self.experiment = make_experiment(tmp_path, n_trials=n_trials)
        self.runtime = Runtime.from_settings(
            Settings(output_dir=tmp_path / "out", platform="local")
        )
        self.client = client
        self.keys = redis_keys(self.runtime)
        [submitted] = Submitter(
            self.experiment, self.runtime, client, self.keys, create_app(url)
        ).submit()
        self.jobs = [parse_job(p, TrialJob) for _, p in drain(client, "hpo")]
        assert [j.job_id for j in self.jobs] == submitted.job_ids
        self.ctx = WorkerContext.create(url, self.runtime)
        self.sent = Sent()
        self.reaper = Reaper(
            self.runtime, client, self.keys, self.sent, lambda: self.ctx.mlflow, REAPER_LEASE_S
        )
        self.study_key = study_key_hash("tiny", "hpo_tiny")

    def study(self) -> optuna.Study:
        store = self.runtime.study_store(self.experiment.hpo.checkpoint)
        return open_variant_study(store, VariantRef("tiny", 1, "hpo_tiny"), self.experiment.hpo)

    def die_mid_trial(self, job: TrialJob) -> optuna.trial.Trial:
        """A worker claims, asks and dies: its claim lapses, its trial stays RUNNING."""
        self.ctx.budget.claim(self.study_key, job.job_id, 99, [], lease_s=0.01)
        trial = self.study().ask()
        trial.set_user_attr(JOB_ID_ATTR, job.job_id)
        return trial

    def trusted_pass(self) -> ReapReport:
        """Passes until the claims are trusted (a fresh watch waits one reaper lease), and
        what they all did: a step slower than two thirds of the reaper's lease since the
        last pass makes the next one untrusted, and that pass still retires a finished
        variant (only reaping waits for trust)."""
        done = ReapReport(trusted=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            report = self.reaper.run_once()
            if report is not None:
                for found in fields(report):
                    if found.name != "trusted":
                        getattr(done, found.name).extend(getattr(report, found.name))
                if report.trusted:
                    done.trusted = True
                    return done
            time.sleep(REAPER_LEASE_S / 3)
        raise AssertionError("the reaper never trusted the claims")

    def hpo_runs_of(self, number: int) -> list[str]:
        tags = self.experiment.tags
        found = self.ctx.mlflow.get_experiment_by_name(self.experiment.hpo_experiment_name)
        runs = self.ctx.mlflow.search_runs(
            [found.experiment_id], f"tags.`{tags.process.trial_number}` = '{number}'"
        )
        return [r.info.status for r in runs]


@pytest.fixture
def world(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> World:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2")
    return World(tmp_path, real_redis, redis_url, n_trials=3)


def test_nothing_is_reaped_before_the_claims_can_be_believed(world: World) -> None:
    orphan = world.die_mid_trial(world.jobs[0])
    time.sleep(0.05)
    first = world.reaper.run_once()
    assert first is not None and not first.trusted and first.reaped == []
    assert world.study().trials[orphan.number].state == State.RUNNING
    assert world.trusted_pass().reaped != []


def test_a_dead_workers_trial_is_failed_replaced_and_its_job_retired(world: World) -> None:
    orphan = world.die_mid_trial(world.jobs[0])
    report = world.trusted_pass()
    assert report.reaped == [
        {"study_name": "hpo_tiny", "trial": orphan.number, "job_id": world.jobs[0].job_id}
    ]
    assert world.study().trials[orphan.number].state == State.FAIL
    # It died before opening a run: the reaper logged a FAILED one for it.
    assert world.hpo_runs_of(orphan.number) == ["FAILED"]
    [run] = world.ctx.mlflow.search_runs(
        [world.ctx.experiment_id(world.experiment.hpo_experiment_name)]
    )
    assert run.data.tags[world.experiment.tags.benchmark.error] == LOST_REASON
    [replacement] = [parse_job(p, TrialJob) for p in world.sent.of(TASK_RUN_TRIAL)]
    assert replacement.job_id == f"{world.jobs[0].job_id}.r1"
    assert (
        replacement.study_name == "hpo_tiny" and replacement.experiment == world.jobs[0].experiment
    )
    # The killed job's own message, redelivered later, finds its work done.
    assert execute_trial(world.jobs[0], world.ctx).status == "already_done"
    assert world.reaper.run_once().reaped == []  # type: ignore[union-attr]  # once only


def test_a_run_opened_by_a_worker_that_died_before_recording_it_is_failed(world: World) -> None:
    orphan = world.die_mid_trial(world.jobs[0])
    experiment = world.experiment
    record = TrialRecord(
        state="FAIL", value=None, params={}, experiment=experiment.name, backbone="tiny",
        study_name="hpo_tiny", variant=1, trial_number=orphan.number,
        metric=experiment.hpo.objective.metric,
    )  # fmt: skip
    start_trial_run(
        world.ctx.mlflow,
        world.ctx.experiment_id(experiment.hpo_experiment_name),
        record,
        record.mlflow_tags(experiment.tags),
    )
    world.trusted_pass()
    assert world.hpo_runs_of(orphan.number) == ["FAILED"]  # that run, no other


def test_the_last_trial_lost_is_replaced_and_the_variant_then_benchmarked(world: World) -> None:
    for job in world.jobs[:2]:
        assert execute_trial(job, world.ctx).status == "completed"
    world.die_mid_trial(world.jobs[2])
    world.trusted_pass()
    [payload] = world.sent.of(TASK_RUN_TRIAL)
    outcome = execute_trial(parse_job(payload, TrialJob), world.ctx)
    assert outcome.status == "completed" and outcome.variant_complete
    # Nobody sent the benchmark (the test plays a worker that died right after telling
    # its trial): the reaper finds the variant finished, retires it and benchmarks it.
    report = world.trusted_pass()
    assert report.variants_finished == ["hpo_tiny"]
    assert ActiveVariants(world.client, world.keys).variants() == {}
    [bench] = [parse_job(p, BenchmarkJob) for p in world.sent.of(TASK_RUN_BENCHMARK)]
    assert bench.study_name == "hpo_tiny" and bench.fence == 1
    assert world.trusted_pass().variants_finished == []  # once


def test_a_lapsed_benchmark_lease_is_enqueued_again_and_the_stale_job_publishes_nothing(
    world: World,
) -> None:
    for job in world.jobs:
        execute_trial(job, world.ctx)
    world.trusted_pass()  # the variant finished: its benchmark is sent
    [stale] = [parse_job(p, BenchmarkJob) for p in world.sent.of(TASK_RUN_BENCHMARK)]
    leases = BenchmarkLeases(world.client, world.keys)
    # A worker took the key over and died mid-measurement: its lease lapses.
    assert leases.transfer(stale.benchmark_key, stale.job_id, f"{stale.job_id}@dead", 0.05)
    time.sleep(0.1)
    report = world.trusted_pass()
    [again_id] = report.benchmarks_requeued
    [_, again] = [parse_job(p, BenchmarkJob) for p in world.sent.of(TASK_RUN_BENCHMARK)]
    assert again.job_id == again_id and again.fence == stale.fence + 1
    assert set(leases.jobs()) == {again_id}
    assert execute_benchmark(again, world.ctx).status == "measured"
    # The original message comes back after the visibility timeout: superseded.
    assert execute_benchmark(stale, world.ctx).status == "superseded"
    assert leases.jobs() == {} and world.trusted_pass().benchmarks_requeued == []


def test_one_reaper_at_a_time(world: World) -> None:
    lock = world.client.lock(world.keys.reaper_lock(), timeout=10)
    assert lock.acquire(blocking=False)
    try:
        assert world.reaper.run_once() is None
    finally:
        lock.release()
    assert world.reaper.run_once() is not None
