"""Fault: MLflow unreachable for a while during a trial and during a benchmark.

In process (the test plays the worker) with a client that fails on demand, as a tracking
server that went away looks to its client: a short outage is absorbed by bounded retries
on the same run; a long one ends in a clear failure: a failed trial is replaced by itself,
a failed benchmark is recovered by `hpoq benchmark retry-failed`. Never two FINISHED runs
for one trial or one key.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import redis
from mlflow.exceptions import MlflowException

from hpoq.core.benchmark_index import read_cache
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.optuna_setup import RUN_ID_ATTR
from hpoq.errors import ServiceError
from hpoq.producer.benchmark import retry_failed
from hpoq.workers.benchmark_job import execute_benchmark
from hpoq.workers.trial_runner import execute_trial
from tests.integration.cluster import wait_for
from tests.integration.inprocess import World, patch_objective, patch_runner
from tests.integration.probes import budget_state, finished, trials

State = optuna.trial.TrialState
ATTEMPTS = 5  # hpoq.core.retry.retry_call's default bound


@pytest.fixture
def world(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> World:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "5")
    # The retries' backoff is not what is under test: no waiting between attempts.
    monkeypatch.setattr("hpoq.core.retry.backoff_delay", lambda *a: 0.0)
    return World.create(tmp_path, real_redis, redis_url, n_trials=2)


def _once_the_run_is_open(world: World, outage: Callable[[], None]) -> Callable[[], None]:
    """The outage starts mid-trial: once the trial's run is open (it opens on a thread while
    the objective works; without the wait, the outage can hit its opening instead)."""

    def start() -> None:
        wait_for(
            lambda: [
                t
                for t in trials(world.runtime, world.experiment, State.RUNNING)
                if RUN_ID_ATTR in t.user_attrs
            ],
            60,
            "the trial's MLflow run",
        )
        outage()

    return start


def _hpo_runs(world: World) -> list[Any]:
    return world.runs(world.experiment.hpo_experiment_name)


def _bench_runs(world: World) -> list[Any]:
    return world.runs(world.experiment.benchmark_experiment_name)


def test_a_short_outage_mid_trial_is_retried_and_the_trial_counts_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = world.flaky()
    patch_objective(
        monkeypatch, _once_the_run_is_open(world, lambda: flaky.fail_next(ATTEMPTS - 1))
    )
    jobs = world.submit()
    outcome = execute_trial(jobs[0], world.ctx)
    assert outcome.status == "completed"
    assert 1 < flaky.calls["log_batch"] <= ATTEMPTS  # refused, retried, landed
    [run] = _hpo_runs(world)
    assert run.info.status == "FINISHED" and run.info.run_id == outcome.run_id
    assert run.data.metrics["macro-f1"] == pytest.approx(outcome.value)
    assert len(trials(world.runtime, world.experiment, State.COMPLETE)) == 1
    assert budget_state(world.redis, world.runtime).finished == {jobs[0].job_id}


@pytest.mark.parametrize("when", ["at_start", "mid_trial"])
def test_a_long_outage_fails_the_trial_and_its_replacement_tops_it_up(
    world: World, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    flaky = world.flaky()
    jobs = world.submit()
    assert execute_trial(jobs[0], world.ctx).status == "completed"
    if when == "at_start":
        flaky.down = True
    else:
        patch_objective(
            monkeypatch, _once_the_run_is_open(world, lambda: setattr(flaky, "down", True))
        )
    flaky.calls.clear()
    outcome = execute_trial(jobs[1], world.ctx)
    assert outcome.status == "failed" and "MLflow" in (outcome.error or "")
    if when == "mid_trial":
        assert flaky.calls["log_batch"] == ATTEMPTS  # bounded, then a clear failure
    # The trial did not count: FAIL in Optuna, its slot free, no FINISHED run for it, and
    # its replacement pending (the worker's task sends it).
    [failed] = trials(world.runtime, world.experiment, State.FAIL)
    assert len(trials(world.runtime, world.experiment, State.COMPLETE)) == 1
    budget = budget_state(world.redis, world.runtime)
    assert budget.claims == {} and budget.finished == {jobs[0].job_id}
    assert outcome.replacement == f"{jobs[1].job_id}.r1"
    assert set(budget.pending) == {outcome.replacement}
    assert execute_trial(jobs[1], world.ctx).status == "already_done"  # a redelivery
    record = world.runtime.layout.trial_dir("tiny", "hpo_tiny", failed.number) / "metrics.json"
    assert json.loads(record.read_text())["state"] == "FAIL"

    flaky.down = False  # MLflow is back
    replacement = jobs[1].model_copy(update={"job_id": outcome.replacement})
    done = execute_trial(replacement, world.ctx)
    assert done.status == "completed" and done.variant_complete
    assert len(trials(world.runtime, world.experiment, State.COMPLETE)) == 2
    finished_runs = finished(_hpo_runs(world))
    assert len(finished_runs) == 2
    assert len({r.data.tags["hpoq.trial_number"] for r in finished_runs}) == 2
    assert failed.number not in {int(r.data.tags["hpoq.trial_number"]) for r in finished_runs}


def _measured_world(world: World) -> Any:
    jobs = world.submit()
    for job in jobs:
        execute_trial(job, world.ctx)
    [bench] = world.benchmark()
    return bench


def test_a_short_outage_while_publishing_a_benchmark_is_retried_on_one_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _measured_world(world)
    flaky = world.flaky()
    patch_runner(monkeypatch, lambda: flaky.fail_next(ATTEMPTS - 1))
    outcome = execute_benchmark(job, world.ctx)
    assert outcome.status == "measured"
    [run] = _bench_runs(world)  # one run: no half-logged attempt left behind
    assert run.info.status == "FINISHED" and run.info.run_id == outcome.run_id
    assert read_cache(world.runtime.layout, job.benchmark_key)["run_id"] == run.info.run_id  # type: ignore[index]


@pytest.mark.parametrize("call", ["log_batch", "set_terminated"])
def test_a_lost_reply_is_retried_on_the_same_run_never_two_finished_runs(
    world: World, call: str
) -> None:
    job = _measured_world(world)
    world.flaky().lose_reply(call)
    assert execute_benchmark(job, world.ctx).status == "measured"
    [run] = _bench_runs(world)
    assert run.info.status == "FINISHED"


def test_a_long_outage_during_a_benchmark_fails_clearly_and_retry_failed_recovers(
    world: World, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    job = _measured_world(world)
    flaky = world.flaky()
    patch_runner(monkeypatch, lambda: setattr(flaky, "down", True))
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)  # the tasks module builds its app at import
    tasks = importlib.import_module("hpoq.workers.tasks")
    monkeypatch.setattr(tasks, "_context", world.ctx)
    # The job's last transient retry: the task shell records the failure and re-raises.
    with pytest.raises((MlflowException, ServiceError)):
        tasks.run_benchmark.apply(
            args=[job.to_payload()],
            task_id=job.job_id,
            retries=tasks.MAX_TRANSIENT_RETRIES,
            throw=True,
        )
    assert _bench_runs(world) == []  # nothing half-published
    assert read_cache(world.runtime.layout, job.benchmark_key) is None
    assert world.redis.hexists(world.services.keys.failed_benchmarks(), job.benchmark_key)
    leases = BenchmarkLeases(world.redis, world.services.keys)
    assert leases.holder(job.benchmark_key) is None  # the key is free again

    flaky.down = False
    report = retry_failed(world.services)
    assert [e["key"] for e in report.enqueued] == [job.benchmark_key]
    [again] = world.queued_benchmarks()
    assert execute_benchmark(again, world.ctx).status == "measured"
    runs = _bench_runs(world)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert not world.redis.hexists(world.services.keys.failed_benchmarks(), job.benchmark_key)
    assert retry_failed(world.services).enqueued == []


def test_a_benchmark_job_that_breaks_for_good_frees_its_key_and_is_remembered(
    world: World, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """An error that retrying will not mend (a bug, not an outage): recorded as a failure
    at once, the key free and out of the reaper's registry, `retry-failed` can re-run it."""
    job = _measured_world(world)

    def broken(*args: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr("hpoq.workers.benchmark_job._existing_result", broken)
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    tasks = importlib.import_module("hpoq.workers.tasks")
    monkeypatch.setattr(tasks, "_context", world.ctx)
    with pytest.raises(KeyError):
        tasks.run_benchmark.apply(args=[job.to_payload()], task_id=job.job_id, throw=True)
    assert world.redis.hexists(world.services.keys.failed_benchmarks(), job.benchmark_key)
    leases = BenchmarkLeases(world.redis, world.services.keys)
    assert leases.holder(job.benchmark_key) is None and leases.jobs() == {}
    [run] = _bench_runs(world)
    assert run.info.status == "FAILED" and "a bug" in run.data.tags["hpoq.error"]
