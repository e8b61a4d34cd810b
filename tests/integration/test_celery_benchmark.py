"""Benchmarks on real Celery workers: event-driven after a sweep, once per key under
concurrent producers, and recovery from a worker killed mid-measurement."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.producer.submit import Submitter
from tests.factories import make_experiment, write_experiment
from tests.integration.cluster import cluster_env, wait_for, workers

pytestmark = pytest.mark.slow


def _bench_runs(runtime: Runtime, name: str) -> list:  # type: ignore[type-arg]
    client = make_client(runtime.mlflow_uri())
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def _cli(path: Path, env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "benchmark", str(path), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_finished_sweep_benchmarks_itself_and_a_second_run_does_nothing(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    path = write_experiment(tmp_path, n_trials=3)
    experiment = make_experiment(tmp_path, n_trials=3)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    Submitter(experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)).submit()
    env = cluster_env(output, redis_url)
    with workers(env, tmp_path, 2) as pool:
        runs = wait_for(
            lambda: [
                r
                for r in _bench_runs(runtime, experiment.benchmark_experiment_name)
                if r.info.status == "FINISHED"
            ],
            180,
            "the event-driven benchmark",
            pool,
        )
        again = _cli(path, env)
        assert again["enqueued"] == [] and len(again["skipped_done"]) == 1
        time.sleep(2)
    assert len(runs) == 1
    assert len(_bench_runs(runtime, experiment.benchmark_experiment_name)) == 1


def test_ten_concurrent_producers_enqueue_each_key_once(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    path = write_experiment(tmp_path, n_trials=2, backbones=("a", "b"))
    experiment = make_experiment(tmp_path, n_trials=2, backbones=("a", "b"))
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    Submitter(experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)).submit()
    env = cluster_env(output, redis_url)
    with workers(env, tmp_path, 1, queues="hpo") as pool:  # trials only: benchmarks stay queued
        wait_for(lambda: real_redis.llen("benchmark") >= 2, 180, "the variants' events", pool)
    real_redis.delete("benchmark")
    # The events took the leases; let the queued ones go as if they lapsed.
    for key in real_redis.scan_iter("hpoq:*:bench-lease:*"):
        real_redis.delete(key)
    cmd = [sys.executable, "-m", "hpoq.producer", "benchmark", str(path), "--json"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(10)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode()[-1500:] for _, e in outs]
    reports = [json.loads(o) for o, _ in outs]
    enqueued = [e["key"] for r in reports for e in r["enqueued"]]
    assert len(enqueued) == 2 and len(set(enqueued)) == 2
    assert sum(len(r["skipped_in_flight"]) for r in reports) == 18
    assert real_redis.llen("benchmark") == 2


def test_a_worker_killed_mid_benchmark_frees_the_key_for_exactly_one_later_measurement(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    path = write_experiment(tmp_path, n_trials=2)
    experiment = make_experiment(tmp_path, n_trials=2)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    Submitter(experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)).submit()
    env = cluster_env(
        output,
        redis_url,
        HPOQ_CHEAP_BENCH_SLEEP="60",
        HPOQ_LEASE_SECONDS="20",  # long enough that the check below sees it held
        HPOQ_VISIBILITY_TIMEOUT="3600",
    )
    (tmp_path / "a").mkdir()
    with workers(env, tmp_path / "a", 1) as [victim]:
        wait_for(
            lambda: "Task hpoq.run_benchmark[" in victim.log(),
            180,
            "a benchmark in progress",
            [victim],
        )
        time.sleep(2)
        victim.kill()
    blocked = _cli(path, cluster_env(output, redis_url))
    assert blocked["enqueued"] == [] and len(blocked["skipped_in_flight"]) == 1
    wait_for(  # the dead worker's lease lapses on its own
        lambda: not list(real_redis.scan_iter("hpoq:*:bench-lease:*")), 60, "the lease to lapse"
    )
    fast = cluster_env(output, redis_url, HPOQ_LEASE_SECONDS="3")
    report = _cli(path, fast)
    assert len(report["enqueued"]) == 1
    (tmp_path / "b").mkdir()
    with workers(fast, tmp_path / "b", 1) as pool:
        wait_for(
            lambda: [
                r
                for r in _bench_runs(runtime, experiment.benchmark_experiment_name)
                if r.info.status == "FINISHED"
            ],
            120,
            "the re-run benchmark",
            pool,
        )
        assert _cli(path, fast)["enqueued"] == []
    finished = [
        r
        for r in _bench_runs(runtime, experiment.benchmark_experiment_name)
        if r.info.status == "FINISHED"
    ]
    assert len(finished) == 1 and finished[0].data.tags["hpoq.fencing_token"] == "2"
