"""Fault: a whole worker (main process and pool child) SIGKILLed mid-trial and mid-benchmark.

Each test lets the cluster run to quiet (nothing queued, nothing unacknowledged, the killed
job's message redelivered and finished) and then checks Optuna, MLflow, disk and Redis:
the budget and the lease recover, the sweep and its benchmark complete, no trial counts
twice and no key is measured twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.benchmark_index import read_cache
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.producer.submit import Submitter
from hpoq.workers.celery_app import create_app
from hpoq.workers.context import redis_keys
from tests.factories import make_experiment, write_experiment
from tests.integration.cluster import Worker, cluster_env, wait_for
from tests.integration.probes import (
    State,
    budget_state,
    finished,
    hpoq_json,
    lease_keys,
    quiet,
    runs,
    task_outcome,
    trials,
)

pytestmark = pytest.mark.slow


def _claim_lapsed(client: redis.Redis, runtime: Runtime, job_id: str) -> bool:
    score = budget_state(client, runtime).claims.get(job_id)
    return score is None or score < time.time() * 1000


def test_a_worker_killed_mid_trial_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    experiment = make_experiment(tmp_path, n_trials=4)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    keys = redis_keys(runtime)
    [submitted] = Submitter(experiment, runtime, real_redis, keys, create_app(redis_url)).submit()
    env = cluster_env(
        output,
        redis_url,
        HPOQ_CHEAP_OBJECTIVE_SLEEP="1",  # 3 s per trial
        HPOQ_LEASE_SECONDS="4",
        HPOQ_VISIBILITY_TIMEOUT="8",
    )
    victim = Worker(env, tmp_path / "victim.log")
    try:
        [running] = wait_for(  # its objective runs: it has a job id and an MLflow run
            lambda: [
                t for t in trials(runtime, experiment, State.RUNNING) if RUN_ID_ATTR in t.user_attrs
            ],
            120,
            "a running trial",
            [victim],
        )
        killed_job = str(running.user_attrs[JOB_ID_ATTR])
        assert killed_job in budget_state(real_redis, runtime).claims
        victim.kill()
    finally:
        victim.stop()
    # The dead worker's claim lapses on its own; nobody released it.
    wait_for(lambda: _claim_lapsed(real_redis, runtime, killed_job), 30, "the claim to lapse")

    survivor = Worker(env, tmp_path / "survivor.log")
    try:
        wait_for(
            lambda: finished(runs(runtime, experiment.benchmark_experiment_name)),
            150,
            "the sweep and its benchmark",
            [survivor],
        )
        # The killed job's own message comes back after the visibility timeout and does
        # nothing: its trial was reaped and replaced.
        wait_for(lambda: task_outcome(real_redis, killed_job), 90, "the redelivery", [survivor])
        wait_for(lambda: quiet(real_redis), 60, "an idle cluster", [survivor])
    finally:
        survivor.stop()

    redelivered = task_outcome(real_redis, killed_job)
    assert redelivered is not None and redelivered["status"] == "already_done"
    assert redelivered["trial_number"] is None  # it ran no trial of its own
    # Optuna: n_trials COMPLETE, the killed trial FAIL, nothing left RUNNING.
    complete = trials(runtime, experiment, State.COMPLETE)
    assert len(complete) == 4
    assert [t.number for t in trials(runtime, experiment, State.FAIL)] == [running.number]
    assert trials(runtime, experiment, State.RUNNING) == []
    job_ids = [t.user_attrs[JOB_ID_ATTR] for t in complete]
    assert len(set(job_ids)) == 4 and killed_job not in job_ids
    # The replacement of the reaped trial, then the submitted jobs the victim never took.
    assert set(job_ids) == {f"{killed_job}.r1", *submitted.job_ids} - {killed_job}
    # MLflow: one FINISHED run per COMPLETE trial, the killed trial's run FAILED.
    hpo_runs = runs(runtime, experiment.hpo_experiment_name)
    done = finished(hpo_runs)
    assert len(done) == 4 and len(hpo_runs) == 5
    assert len({r.data.tags["hpoq.trial_key_hash"] for r in done}) == 4
    [killed_run] = [r for r in hpo_runs if r.data.tags["hpoq.trial_number"] == str(running.number)]
    assert killed_run.info.status == "FAILED"
    # Disk: metrics.json for each COMPLETE trial, none for the killed one.
    for trial in complete:
        metrics = runtime.layout.trial_dir("tiny", "hpo_tiny", trial.number) / "metrics.json"
        assert json.loads(metrics.read_text())["state"] == "COMPLETE"
    killed_dir = runtime.layout.trial_dir("tiny", "hpo_tiny", running.number)
    assert not (killed_dir / "metrics.json").exists()
    # Redis: the budget counts each COMPLETE trial once; no claim, no pending job left.
    budget = budget_state(real_redis, runtime)
    assert budget.claims == {} and budget.pending == {}
    assert budget.finished == set(job_ids)
    assert killed_job in budget.done
    assert real_redis.hlen(keys.failed_jobs()) == 0
    # The benchmark: one FINISHED run, its cache, no lease left.
    [bench] = runs(runtime, experiment.benchmark_experiment_name)
    assert bench.info.status == "FINISHED"
    key = bench.data.tags["benchmark_key"]
    assert read_cache(runtime.layout, key)["run_id"] == bench.info.run_id  # type: ignore[index]
    assert lease_keys(real_redis) == []
    assert real_redis.hlen(keys.failed_benchmarks()) == 0


def test_a_worker_killed_mid_benchmark_is_redelivered_and_measures_the_key_once(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    path = write_experiment(tmp_path, n_trials=2)
    experiment = make_experiment(tmp_path, n_trials=2)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    keys = redis_keys(runtime)
    Submitter(experiment, runtime, real_redis, keys, create_app(redis_url)).submit()
    settings = {"HPOQ_LEASE_SECONDS": "3", "HPOQ_VISIBILITY_TIMEOUT": "8"}
    slow = cluster_env(output, redis_url, HPOQ_CHEAP_BENCH_SLEEP="60", **settings)
    victim = Worker(slow, tmp_path / "victim.log")
    try:
        # The worker has taken the key's lease over from the producer: it is measuring.
        [lease] = wait_for(
            lambda: [k for k in lease_keys(real_redis) if "@" in (real_redis.get(k) or "")],
            120,
            "a benchmark in progress",
            [victim],
        )
        bench_job = str(real_redis.get(lease)).split("@", 1)[0]
        victim.kill()
    finally:
        victim.stop()
    assert runs(runtime, experiment.benchmark_experiment_name) == []

    fast = cluster_env(output, redis_url, **settings)
    successor = Worker(fast, tmp_path / "successor.log")
    try:
        wait_for(lambda: task_outcome(real_redis, bench_job), 120, "the redelivery", [successor])
        wait_for(lambda: quiet(real_redis), 60, "an idle cluster", [successor])
        again = hpoq_json(fast, "benchmark", str(path))
    finally:
        successor.stop()

    assert task_outcome(real_redis, bench_job)["status"] == "measured"  # type: ignore[index]
    assert again["enqueued"] == [] and len(again["skipped_done"]) == 1
    [bench] = runs(runtime, experiment.benchmark_experiment_name)
    assert bench.info.status == "FINISHED"
    assert bench.data.tags["hpoq.fencing_token"] == "1"  # the same job, not a new one
    cached = read_cache(runtime.layout, bench.data.tags["benchmark_key"])
    assert cached is not None and cached["run_id"] == bench.info.run_id and cached["fence"] == 1
    assert lease_keys(real_redis) == []
    assert real_redis.hlen(keys.failed_benchmarks()) == 0
    # The sweep itself is untouched: 2 COMPLETE trials, 2 FINISHED runs, a clean budget.
    assert len(trials(runtime, experiment, State.COMPLETE)) == 2
    assert len(finished(runs(runtime, experiment.hpo_experiment_name))) == 2
    budget = budget_state(real_redis, runtime)
    assert budget.claims == {} and budget.pending == {} and len(budget.finished) == 2
