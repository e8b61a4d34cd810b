"""Faults in delivery: a job that crashes its worker process every time (on Redis and on
RabbitMQ, which requeues a job rejected by a lost pool process at once), and a job handed
to a second worker after the visibility timeout while the first delivery still runs."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.runtime import Runtime
from hpoq.producer.submit import Submitter
from hpoq.workers.deliveries import root_job_id
from tests.factories import make_experiment, write_experiment
from tests.integration.brokers import Broker
from tests.integration.cluster import Worker, cluster_env, wait_for, workers
from tests.integration.crashing import MARKERS_ENV, RELEASE
from tests.integration.probes import (
    REPO_ROOT,
    State,
    budget_state,
    finished,
    hpoq_json,
    lease_keys,
    quiet,
    runs,
    trials,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("crash", ["sigkill", "hard_exit"])
def test_a_job_that_always_kills_its_worker_stops_after_max_deliveries_and_shows_failed(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, crash: str, broker: Broker
) -> None:
    output = tmp_path / "out"
    objective = f"tests.integration.crashing:{crash}"
    # Deliveries are the bound under test: failed trials may be replaced past it.
    extra = {"hpo_extra": {"max_failed_trials": 10}}
    path = write_experiment(tmp_path, n_trials=1, objective=objective, **extra)
    experiment = make_experiment(tmp_path, n_trials=1, objective=objective, **extra)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    keys = redis_keys(runtime)
    [submitted] = Submitter(experiment, runtime, real_redis, keys, broker.app(redis_url)).submit()
    [job_id] = submitted.job_ids
    env = cluster_env(
        output,
        redis_url,
        **broker.env(),
        HPOQ_MAX_DELIVERIES="3",
        HPOQ_LEASE_SECONDS="2",
        # The objective lives in the tests package: importable from the repository root.
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    with workers(env, tmp_path, 1) as pool:
        wait_for(lambda: real_redis.hlen(keys.failed_jobs()), 120, "the job to be given up", pool)
        wait_for(lambda: broker.quiet(real_redis), 60, "an idle cluster", pool)
        deliveries = real_redis.get(keys.job_deliveries(job_id))
        time.sleep(3)  # more than a lease: nothing comes back
        assert broker.quiet(real_redis)
        assert real_redis.get(keys.job_deliveries(job_id)) == deliveries == "4"
        status = hpoq_json(env, "status", str(path))
        [worker] = pool
        assert worker.process.poll() is None  # the worker itself survived every crash
        crashes = len(re.findall(r"exited with '(signal 9|exitcode 3)", worker.log()))

    # Three deliveries crashed; the fourth gave up without running the objective.
    assert crashes == 3
    assert status["failed_jobs"] == {
        root_job_id(job_id): "gave up after 3 deliveries that never finished"
    }
    [variant] = status["variants"]
    assert (variant["finished"], variant["failed"], variant["running"]) == (0, 3, 0)
    assert status["queues"] == {"hpo": 0, "benchmark": 0, "train": 0}
    assert len(trials(runtime, experiment, State.FAIL)) == 3
    hpo_runs = runs(runtime, experiment.hpo_experiment_name)
    assert [r.info.status for r in hpo_runs] == ["FAILED"] * 3
    budget = budget_state(real_redis, runtime)
    assert budget.claims == {} and budget.finished == set() and budget.pending == {}
    assert runs(runtime, experiment.benchmark_experiment_name) == []


def _received(pool: list[Worker], job_id: str) -> int:
    return sum(w.log().count(f"[{job_id}] received") for w in pool)


def test_a_job_redelivered_after_the_visibility_timeout_while_it_runs_runs_once(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    held = {"runner": "tests.integration.crashing:held_benchmark"}
    path = write_experiment(tmp_path, n_trials=1, benchmark_extra=held)
    experiment = make_experiment(tmp_path, n_trials=1, benchmark_extra=held)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    markers = tmp_path / "markers"
    markers.mkdir()
    env = cluster_env(
        output,
        redis_url,
        HPOQ_CHEAP_OBJECTIVE_SLEEP="4",  # a 12 s trial ...
        HPOQ_VISIBILITY_TIMEOUT="5",  # ... and a benchmark held until released, each handed
        HPOQ_LEASE_SECONDS="3",  # out again while it runs (a retry waits one lease, < 5 s)
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        **{MARKERS_ENV: str(markers)},
    )
    with workers(env, tmp_path, 2) as pool:
        # Both workers up before the job goes out: on a loaded host a worker that is still
        # starting when the 12 s trial ends would find nothing left to redeliver.
        for worker in pool:
            wait_for(lambda w=worker: " ready." in w.log(), 120, "the workers", pool)
        [submitted] = Submitter(
            experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)
        ).submit()
        [trial_job] = submitted.job_ids
        wait_for(lambda: _received(pool, trial_job) >= 2, 60, "the trial's redelivery", pool)
        [lease] = wait_for(
            lambda: [k for k in lease_keys(real_redis) if "@" in (real_redis.get(k) or "")],
            90,
            "the benchmark in progress",
            pool,
        )
        bench_job = str(real_redis.get(lease)).split("@", 1)[0]
        wait_for(lambda: _received(pool, bench_job) >= 2, 60, "the benchmark's redelivery", pool)
        # While it is measured, no producer enqueues the key again, whatever the mode.
        for mode in ("reuse_if_exists", "force_new"):
            report = hpoq_json(env, "benchmark", str(path), "--run-mode", mode)
            assert report["enqueued"] == [] and len(report["skipped_in_flight"]) == 1
        (markers / RELEASE).touch()
        wait_for(
            lambda: finished(runs(runtime, experiment.benchmark_experiment_name)),
            90,
            "the benchmark",
            pool,
        )
        wait_for(
            lambda: quiet(real_redis) and not lease_keys(real_redis), 60, "an idle cluster", pool
        )
        time.sleep(1)
        assert quiet(real_redis)

    # One trial, one run; one measurement, one run.
    assert len(trials(runtime, experiment)) == 1
    assert len(trials(runtime, experiment, State.COMPLETE)) == 1
    [hpo_run] = runs(runtime, experiment.hpo_experiment_name)
    assert hpo_run.info.status == "FINISHED"
    [bench_run] = runs(runtime, experiment.benchmark_experiment_name)
    assert bench_run.info.status == "FINISHED"
    budget = budget_state(real_redis, runtime)
    assert budget.claims == {} and budget.pending == {} and budget.finished == {trial_job}
