"""In-process fault injection: the test plays producer and worker in one process (real
Redis, SQLite MLflow, file-journal Optuna) and breaks one service or the disk on purpose."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from mlflow.exceptions import MlflowException

from hpoq.config.experiment import Experiment
from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.jobs import BenchmarkJob, TrialJob, parse_job
from hpoq.core.runtime import Runtime
from hpoq.producer.benchmark import benchmark_experiment
from hpoq.producer.services import Services
from hpoq.producer.submit import Submitter
from hpoq.workers.context import WorkerContext
from tests.queue_messages import drain


class FlakyMlflow:
    """An MlflowClient that is unreachable on demand, as an HTTP tracking server that went
    away looks to its client (MlflowException). `fail_next(n)`: the next n calls fail;
    `down`: every call fails; `lose_reply(name)`: the next `name` call is applied by the
    server but its reply is lost. `calls` counts attempts per method."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.down = False
        self._fail_next = 0
        self._lose_reply: set[str] = set()
        self.calls: Counter[str] = Counter()

    def fail_next(self, n: int) -> None:
        self._fail_next = n

    def lose_reply(self, name: str) -> None:
        self._lose_reply.add(name)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self.down or self._fail_next > 0:
                self._fail_next = max(0, self._fail_next - 1)
                raise MlflowException(
                    f"API request to http://127.0.0.1:5000 failed ({name}): Connection refused"
                )
            result = attr(*args, **kwargs)
            if name in self._lose_reply:
                self._lose_reply.discard(name)
                raise MlflowException(f"API request ({name}) timed out after it was sent")
            return result

        return call


@dataclass
class World:
    experiment: Experiment
    services: Services
    ctx: WorkerContext
    redis: redis.Redis

    @classmethod
    def create(cls, tmp_path: Path, redis_client: redis.Redis, redis_url: str, **kw: Any) -> World:
        from tests.factories import make_experiment

        experiment = make_experiment(tmp_path, **kw)
        runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
        services = Services(
            runtime, redis_url, redis_client, redis_keys(runtime), create_app(redis_url), None
        )
        return cls(experiment, services, WorkerContext.create(redis_url, runtime), redis_client)

    @property
    def runtime(self) -> Runtime:
        return self.services.runtime

    def flaky(self) -> FlakyMlflow:
        """Put a FlakyMlflow between the worker and MLflow (working until told otherwise)."""
        flaky = FlakyMlflow(self.ctx.mlflow)
        self.ctx.mlflow = flaky  # type: ignore[misc]
        return flaky

    def submit(self, mode: str | None = None) -> list[TrialJob]:
        s = self.services
        Submitter(self.experiment, s.runtime, self.redis, s.keys, s.celery).submit(
            mode_override=mode
        )
        return [parse_job(p, TrialJob) for _, p in drain(self.redis, "hpo")]

    def benchmark(self) -> list[BenchmarkJob]:
        benchmark_experiment(self.experiment, self.services)
        return self.queued_benchmarks()

    def queued_benchmarks(self) -> list[BenchmarkJob]:
        return [parse_job(p, BenchmarkJob) for _, p in drain(self.redis, "benchmark")]

    def runs(self, name: str) -> list[Any]:
        client = self.services.mlflow()
        exp = client.get_experiment_by_name(name)
        return [] if exp is None else list(client.search_runs([exp.experiment_id]))


def finished_sweep(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str, monkeypatch: Any
) -> World:
    """A world whose 2-trial sweep has run in process: where benchmark tests start."""
    from hpoq.workers.trial_runner import execute_trial

    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "5")
    world = World.create(tmp_path, redis_client, redis_url, n_trials=2)
    for job in world.submit():
        execute_trial(job, world.ctx)
    return world


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done: list[bool] = []

    def run() -> None:
        if not done:
            done.append(True)
            action()

    return run


def patch_objective(monkeypatch: Any, before_return: Callable[[], None]) -> None:
    """Wrap the cheap objective: `before_return` runs once, when the next trial's objective
    has its value and its MLflow run is open (an MLflow outage that starts mid-trial, while
    the objective runs). The run is opened on a thread beside the objective, so the hook
    waits until the trial records its run id: on a loaded machine the objective can
    finish before `create_run` does."""
    import hpoq.workers.objectives.cheap as cheap

    real = cheap.objective
    hook = _once(before_return)

    def objective(trial: Any, *args: Any) -> float:
        value = real(trial, *args)
        _wait_for_run_id(trial)
        hook()
        return value

    monkeypatch.setattr(cheap, "objective", objective)


def _wait_for_run_id(trial: Any, timeout_s: float = 60.0) -> None:
    from hpoq.core.optuna_setup import RUN_ID_ATTR

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        if RUN_ID_ATTR in frozen.user_attrs:
            return
        time.sleep(0.01)
    raise AssertionError(f"trial {trial.number} never recorded its MLflow run id")


def patch_runner(monkeypatch: Any, before_return: Callable[[], None]) -> None:
    """Wrap the cheap benchmark runner the same way (once, after the next measurement)."""
    import hpoq.workers.bench.cheap as cheap

    real = cheap.run_inference_benchmark
    hook = _once(before_return)

    def runner(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        hook()
        return result

    monkeypatch.setattr(cheap, "run_inference_benchmark", runner)
