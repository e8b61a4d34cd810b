"""Benchmarks end to end in one process (the test plays the worker): keys measured once,
in-flight keys skipped, redeliveries harmless, force_new re-measures, failures retried."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.benchmark_index import read_cache
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.jobs import BenchmarkJob, TrialJob, parse_job
from hpoq.core.runtime import Runtime
from hpoq.producer.benchmark import benchmark_experiment, retry_failed
from hpoq.producer.services import Services
from hpoq.producer.submit import Submitter
from hpoq.workers.benchmark_job import execute_benchmark
from hpoq.workers.context import WorkerContext
from hpoq.workers.trial_runner import execute_trial
from tests.factories import make_experiment
from tests.queue_messages import drain


@dataclass
class World:
    experiment: object
    services: Services
    ctx: WorkerContext
    redis: redis.Redis

    def sweep(self, mode: str | None = None) -> None:
        """Submit and run every trial job in this process."""
        submitter = Submitter(
            self.experiment,
            self.services.runtime,
            self.redis,  # type: ignore[arg-type]
            self.services.keys,
            self.services.celery,
        )
        submitter.submit(mode_override=mode)
        for _, payload in drain(self.redis, "hpo"):
            execute_trial(parse_job(payload, TrialJob), self.ctx)

    def benchmark(self, mode: str | None = None):  # type: ignore[no-untyped-def]
        report, _, _ = benchmark_experiment(
            self.experiment,
            self.services,  # type: ignore[arg-type]
            mode_override=mode,
        )
        return report

    def queued(self) -> list[BenchmarkJob]:
        return [parse_job(p, BenchmarkJob) for _, p in drain(self.redis, "benchmark")]

    def finished_runs(self, key: str) -> list[object]:
        exp = self.ctx.mlflow.get_experiment_by_name(self.experiment.benchmark_experiment_name)  # type: ignore[attr-defined]
        if exp is None:
            return []
        runs = self.ctx.mlflow.search_runs([exp.experiment_id], max_results=1000)
        return [
            r
            for r in runs
            if r.data.tags.get("benchmark_key") == key and r.info.status == "FINISHED"
        ]


@pytest.fixture
def world(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> World:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2")
    experiment = make_experiment(tmp_path, n_trials=2)
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    services = Services(
        runtime, redis_url, real_redis, redis_keys(runtime), create_app(redis_url), None
    )
    return World(experiment, services, WorkerContext.create(redis_url, runtime), real_redis)


def test_a_key_is_measured_once_and_the_second_run_has_nothing_to_do(world: World) -> None:
    world.sweep()
    first = world.benchmark()
    [job] = world.queued()
    assert [e["key"] for e in first.enqueued] == [job.benchmark_key]
    assert job.benchmark_key.startswith("tiny:hpo_tiny:")
    outcome = execute_benchmark(job, world.ctx)
    assert outcome.status == "measured"
    assert len(world.finished_runs(job.benchmark_key)) == 1
    cached = read_cache(world.services.runtime.layout, job.benchmark_key)
    assert cached is not None and cached["run_id"] == outcome.run_id and cached["fence"] == 1
    run = world.ctx.mlflow.get_run(outcome.run_id)
    assert run.data.tags["hpoq.fencing_token"] == "1"
    assert run.data.metrics["fp32_bs4_latency_p50_ms"] > 0

    second = world.benchmark()
    assert second.enqueued == [] and [e["key"] for e in second.skipped_done] == [job.benchmark_key]
    assert world.queued() == []


def test_a_key_in_flight_is_skipped_by_every_mode(world: World) -> None:
    world.sweep()
    world.benchmark()
    for mode in (None, "force_new"):
        report = world.benchmark(mode)
        assert report.enqueued == [] and len(report.skipped_in_flight) == 1


def test_a_redelivered_job_measures_once(world: World) -> None:
    world.sweep()
    world.benchmark()
    [job] = world.queued()
    assert execute_benchmark(job, world.ctx).status == "measured"
    assert execute_benchmark(job, world.ctx).status == "already_done"
    assert len(world.finished_runs(job.benchmark_key)) == 1


def test_force_new_measures_again_and_a_stale_job_cannot_publish(world: World) -> None:
    world.sweep()
    world.benchmark()
    [job] = world.queued()
    execute_benchmark(job, world.ctx)
    world.benchmark("force_new")
    [forced] = world.queued()
    assert forced.force and forced.fence == 2
    assert execute_benchmark(forced, world.ctx).status == "measured"
    assert len(world.finished_runs(job.benchmark_key)) == 2
    assert execute_benchmark(forced, world.ctx).status == "already_done"  # redelivery
    assert execute_benchmark(job, world.ctx).status == "superseded"  # the old fence
    assert read_cache(world.services.runtime.layout, job.benchmark_key)["fence"] == 2  # type: ignore[index]


def test_best_per_variant_covers_every_variant_and_latest_only_the_latest(
    world: World, tmp_path: Path
) -> None:
    world.sweep()
    world.sweep("force_new")
    report = world.benchmark()
    assert sorted(e["study_name"] for e in report.enqueued) == ["hpo_tiny", "hpo_tiny_v2"]
    for job in world.queued():
        execute_benchmark(job, world.ctx)
    world.sweep("force_new")  # variant 3
    latest = make_experiment(
        tmp_path, n_trials=2, benchmark_extra={"benchmark_strategy": "latest_only"}
    )
    world.experiment = latest
    report = world.benchmark()
    assert [e["study_name"] for e in report.enqueued] == ["hpo_tiny_v3"]


def test_a_failed_benchmark_frees_its_key_and_retry_failed_reruns_exactly_it(
    world: World,
) -> None:
    world.sweep()
    world.benchmark()
    [job] = world.queued()
    trial_dir = world.services.runtime.layout.trial_dir("tiny", job.study_name, job.trial_number)
    checkpoint_file = trial_dir / "checkpoint" / "cheap_checkpoint.json"
    good = checkpoint_file.read_text()
    checkpoint_file.write_text("{corrupt")
    outcome = execute_benchmark(job, world.ctx)
    assert outcome.status == "failed" and "checkpoint" in (outcome.error or "")
    failed = world.ctx.mlflow.get_run(outcome.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["benchmark_key"] == job.benchmark_key
    assert world.redis.get(f"hpoq:{world.services.keys.namespace}:bench-lease:x") is None

    checkpoint_file.write_text(good)
    report = retry_failed(world.services)
    assert [e["key"] for e in report.enqueued] == [job.benchmark_key]
    [again] = world.queued()
    assert execute_benchmark(again, world.ctx).status == "measured"
    assert retry_failed(world.services).enqueued == []


def test_a_malformed_payload_is_rejected(world: World) -> None:
    with pytest.raises(Exception, match="malformed BenchmarkJob"):
        parse_job({"job_id": "x", "kind": "benchmark"}, BenchmarkJob)


def test_a_worker_on_another_host_downloads_the_checkpoint(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    """Hosts share only Redis, MLflow and the Optuna storage: a benchmark worker whose output
    directory never saw the trial gets the checkpoint from the MLflow artifact store, into
    its cache by content digest."""
    shared = {
        "optuna_storage": f"sqlite:///{tmp_path}/optuna.db",
        "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
    }
    host_a = Runtime.from_settings(Settings(output_dir=tmp_path / "a", platform="local", **shared))
    host_b = Runtime.from_settings(Settings(output_dir=tmp_path / "b", platform="local", **shared))
    services = Services(
        host_a, redis_url, real_redis, redis_keys(host_a), create_app(redis_url), None
    )
    world = World(
        make_experiment(tmp_path, n_trials=2),
        services,
        WorkerContext.create(redis_url, host_a),
        real_redis,
    )
    world.sweep()
    world.benchmark()
    [job] = world.queued()
    local_copy = host_b.layout.trial_dir("tiny", job.study_name, job.trial_number) / "checkpoint"
    assert not local_copy.exists()
    outcome = execute_benchmark(job, WorkerContext.create(redis_url, host_b))
    assert outcome.status == "measured", outcome.error
    assert not local_copy.exists()
    [fetched] = [p for p in (host_b.layout.content_cache() / "checkpoints").iterdir() if p.is_dir()]
    assert (fetched / "cheap_checkpoint.json").is_file()


def test_the_python_api_filters_out_what_is_benchmarked(world: World) -> None:
    from hpoq import api

    world.sweep()
    runtime = world.services.runtime
    best = api.retrieve_best_trials(world.experiment, runtime=runtime)  # type: ignore[arg-type]
    assert api.filter_unbenchmarked(world.experiment, best.best, runtime) == best.best  # type: ignore[arg-type]
    world.benchmark()
    [job] = world.queued()
    execute_benchmark(job, world.ctx)
    assert api.filter_unbenchmarked(world.experiment, best.best, runtime) == []  # type: ignore[arg-type]
