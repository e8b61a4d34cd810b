"""Fault: whole workers (main process and pool child) SIGKILLed, with the default
visibility timeout (12 h) and nobody typing a command: first the one running the last
trial of a variant, then the one measuring its benchmark.

Each time the reaper in the surviving workers takes the lapsed claim or lease, and the
work runs again on another worker within 3 x HPOQ_LEASE_SECONDS (the time is printed).
The variant completes, its benchmark is measured once, and when the killed jobs' own
messages come back (as they would after the visibility timeout) they find their work done.
The end state is checked in Optuna, MLflow, on disk and in Redis.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection  # type: ignore[attr-defined]

from hpoq.config.settings import Settings
from hpoq.core.benchmark_index import read_cache
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.active_variants import ActiveVariants
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.producer.submit import Submitter
from tests.factories import make_experiment
from tests.integration.cluster import Worker, cluster_env, wait_for, workers
from tests.integration.crashing import MARKERS_ENV
from tests.integration.probes import (
    REPO_ROOT,
    State,
    budget_state,
    finished,
    hpoq_keys_without_ttl,
    lease_keys,
    quiet,
    runs,
    task_outcome,
    trials,
)

pytestmark = pytest.mark.slow
LEASE_S = 10.0


def _running(worker_pool: list[Worker], job_id: str) -> Worker:
    [worker] = [w for w in worker_pool if f"[{job_id}] received" in w.log()]
    return worker


def _timed(probe: Callable[[], Any], timeout_s: float, what: str, pool: list[Worker]) -> float:
    start = time.monotonic()
    wait_for(probe, timeout_s, what, pool)
    return time.monotonic() - start


def _unacked_task_ids(client: redis.Redis) -> set[str]:
    """The task ids of the messages delivered and not acknowledged (kombu's `unacked` hash
    holds `[message, exchange, routing_key]` per delivery tag)."""
    return {json.loads(entry)[0]["headers"]["id"] for entry in client.hvals("unacked")}


def _redeliver_unacked(client: redis.Redis, redis_url: str) -> None:
    """What every worker does once the visibility timeout has passed: the messages of the
    killed workers go back on their queues (kombu's own restore, with the timeout at 0)."""
    with Connection(redis_url, transport_options={"visibility_timeout": 0}) as conn:
        deadline = time.monotonic() + 30
        while client.hlen("unacked") and time.monotonic() < deadline:
            conn.default_channel.qos.restore_visible(num=100)  # skips while a worker holds
            time.sleep(0.2)  # kombu's restore mutex
    assert client.hlen("unacked") == 0


def test_killed_workers_trial_and_benchmark_run_again_within_three_leases(
    tmp_path: Path,
    real_redis: redis.Redis,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "out"
    markers = tmp_path / "markers"
    markers.mkdir()
    experiment = make_experiment(
        tmp_path,
        n_trials=2,
        objective="tests.integration.crashing:slow_first",
        benchmark_extra={"runner": "tests.integration.crashing:slow_first_benchmark"},
    )
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    keys = redis_keys(runtime)
    env = cluster_env(
        output,
        redis_url,
        HPOQ_LEASE_SECONDS=str(LEASE_S),  # the visibility timeout stays at its default
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        **{MARKERS_ENV: str(markers)},
    )
    bound_s = 3 * LEASE_S
    with workers(env, tmp_path, 3) as pool:
        for worker in pool:
            wait_for(lambda w=worker: " ready." in w.log(), 120, "the workers", pool)
        [submitted] = Submitter(
            experiment, runtime, real_redis, keys, create_app(redis_url)
        ).submit()

        # 1. The worker running the variant's last trial dies.
        [hung] = wait_for(
            lambda: [
                t
                for t in trials(runtime, experiment, State.RUNNING)
                if RUN_ID_ATTR in t.user_attrs
                and len(trials(runtime, experiment, State.COMPLETE)) == 1
            ],
            120,
            "the last trial running, the other one done",
            pool,
        )
        killed_job = str(hung.user_attrs[JOB_ID_ATTR])
        victim = _running(pool, killed_job)
        victim.kill()
        survivors = [w for w in pool if w is not victim]
        trial_recovery_s = _timed(  # its replacement has asked Optuna for its trial
            lambda: [
                t
                for t in trials(runtime, experiment)
                if t.user_attrs.get(JOB_ID_ATTR) == f"{killed_job}.r1"
            ],
            bound_s,
            "the lost trial running again",
            survivors,
        )

        # 2. The variant completes; the worker measuring its benchmark dies.
        leases = BenchmarkLeases(real_redis, keys)
        [lease] = wait_for(  # a worker holds the key and is inside the runner
            lambda: (
                (markers / "benchmark").exists()
                and [k for k in lease_keys(real_redis) if "@" in (real_redis.get(k) or "")]
            ),
            120,
            "the benchmark in progress",
            survivors,
        )
        killed_bench = str(real_redis.get(lease)).split("@", 1)[0]
        bench_victim = _running(survivors, killed_bench)
        bench_victim.kill()
        last = [w for w in survivors if w is not bench_victim]
        bench_recovery_s = _timed(  # measured again and published (the runner is quick)
            lambda: finished(runs(runtime, experiment.benchmark_experiment_name)),
            bound_s,
            "the benchmark measured again",
            last,
        )

        # 3. The killed jobs' own messages come back: their work is done.
        # Only the two killed jobs' messages stay unacknowledged, once the survivor that
        # measured the benchmark again has acknowledged its own (just after it published).
        wait_for(
            lambda: _unacked_task_ids(real_redis) == {killed_job, killed_bench},
            60,
            "only the killed jobs' messages unacknowledged",
            last,
        )
        _redeliver_unacked(real_redis, redis_url)
        wait_for(lambda: task_outcome(real_redis, killed_job), 60, "the trial's redelivery", last)
        wait_for(lambda: task_outcome(real_redis, killed_bench), 60, "the bench redelivery", last)
        wait_for(lambda: quiet(real_redis), 60, "an idle cluster", last)

    recovery = {"lease_s": LEASE_S, "bound_s": bound_s, "trial_s": round(trial_recovery_s, 1)}
    recovery["benchmark_s"] = round(bench_recovery_s, 1)
    with capsys.disabled():
        print(f"\nrecovery after SIGKILL: {json.dumps(recovery)}")
    assert task_outcome(real_redis, killed_job)["status"] == "already_done"  # type: ignore[index]
    assert task_outcome(real_redis, killed_bench)["status"] == "superseded"  # type: ignore[index]

    # Optuna: n_trials COMPLETE, the killed trial FAIL, nothing left RUNNING.
    complete = trials(runtime, experiment, State.COMPLETE)
    assert len(complete) == 2
    assert [t.number for t in trials(runtime, experiment, State.FAIL)] == [hung.number]
    assert trials(runtime, experiment, State.RUNNING) == []
    job_ids = {t.user_attrs[JOB_ID_ATTR] for t in complete}
    assert job_ids == {f"{killed_job}.r1", *submitted.job_ids} - {killed_job}
    # MLflow: one FINISHED run per COMPLETE trial, the killed trial's run FAILED.
    hpo_runs = runs(runtime, experiment.hpo_experiment_name)
    assert len(finished(hpo_runs)) == 2 and len(hpo_runs) == 3
    [killed_run] = [r for r in hpo_runs if r.data.tags["hpoq.trial_number"] == str(hung.number)]
    assert killed_run.info.status == "FAILED"
    # Disk: metrics.json for each COMPLETE trial, none for the killed one.
    for trial in complete:
        metrics = runtime.layout.trial_dir("tiny", "hpo_tiny", trial.number) / "metrics.json"
        assert json.loads(metrics.read_text())["state"] == "COMPLETE"
    assert not (runtime.layout.trial_dir("tiny", "hpo_tiny", hung.number) / "metrics.json").exists()
    # The benchmark: one FINISHED run, by the job enqueued again (fence 2), and its cache.
    [bench] = runs(runtime, experiment.benchmark_experiment_name)
    assert bench.info.status == "FINISHED" and bench.data.tags["hpoq.fencing_token"] == "2"
    cached = read_cache(runtime.layout, bench.data.tags["benchmark_key"])
    assert cached is not None and cached["run_id"] == bench.info.run_id
    # Redis: the budget counts each COMPLETE trial once; nothing claimed, pending, leased,
    # registered or given up.
    budget = budget_state(real_redis, runtime)
    assert budget.claims == {} and budget.pending == {}
    assert budget.finished == job_ids and killed_job in budget.done
    assert lease_keys(real_redis) == [] and leases.jobs() == {}
    assert ActiveVariants(real_redis, keys).variants() == {}
    assert real_redis.hlen(keys.failed_jobs()) == 0
    assert real_redis.hlen(keys.failed_benchmarks()) == 0
    assert hpoq_keys_without_ttl(real_redis) == []
