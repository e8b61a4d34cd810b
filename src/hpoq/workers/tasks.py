"""Celery tasks: validate the payload, bound deliveries, call the plain job function.

A job that failed for good (and a malformed payload) fails its task: Celery's result and
Flower say FAILURE with the error text, after the job function has recorded the failure
in MLflow and Redis (a malformed payload is dead-lettered first). Loaded only inside
worker processes (through the app's `include`). Every pool process also runs the reaper
(reaper_thread.py); the main process records the messages Celery refuses
(dead_letter_signals.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown

from hpoq.core.celery_app import coordination_url
from hpoq.core.jobs import (
    TASK_RUN_BENCHMARK,
    TASK_RUN_FINAL_TRAINING,
    TASK_RUN_TRIAL,
    BenchmarkJob,
    FinalTrainingJob,
    JobInFlight,
    TrialJob,
    parse_job,
)
from hpoq.errors import InputError, JobFailed, JobRejected
from hpoq.workers import dead_letter_signals
from hpoq.workers.accelerator_memory import freeze_loaded_objects, release_accelerator_memory
from hpoq.workers.context import WorkerContext

log = logging.getLogger(__name__)
J = TypeVar("J", TrialJob, BenchmarkJob, FinalTrainingJob)
T = TypeVar("T")

MAX_TRANSIENT_RETRIES = 5

_context: WorkerContext | None = None
# Set in a worker's pool process; an in-process caller (tests, tools) keeps its own heap.
_in_pool_process = {"yes": False}


def worker_context(redis_url: str) -> WorkerContext:
    """The process's context, built on first use (after the prefork child has started)."""
    global _context
    if _context is None:
        _context = WorkerContext.create(redis_url)
    return _context


@worker_process_init.connect
def _fresh_child(**_: Any) -> None:
    # A forked child must not reuse the parent's sockets.
    global _context
    _context = None
    # Warm the child once, before its first job: these imports take seconds.
    import mlflow.tracking  # noqa: F401
    import optuna  # noqa: F401

    from hpoq.config.settings import load_settings
    from hpoq.workers.accelerator_memory import cap_process_memory

    # K slots on one GPU: this process may allocate its share only (nothing without CUDA).
    fraction = cap_process_memory(load_settings().worker_slots)
    if fraction is not None:
        log.info("GPU memory capped to %.0f%% for this slot", 100 * fraction)
    _in_pool_process["yes"] = True
    freeze_loaded_objects()
    _start_reaper()


def _start_reaper() -> None:
    from hpoq.core.reaper import Reaper
    from hpoq.workers.context import lease_seconds
    from hpoq.workers.reaper_thread import ReaperThread

    lease_s = lease_seconds()

    def make() -> Reaper:
        ctx = WorkerContext.create(coordination_url(app))  # its own clients and study stores
        return Reaper(ctx.runtime, ctx.redis, ctx.keys, app, lambda: ctx.mlflow, lease_s)

    ReaperThread(make, interval_s=lease_s / 3).start()


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    if _context is not None:
        _context.redis.close()


def in_flight_recheck_s() -> float:
    """How long a delivery that finds its job running elsewhere waits before looking again:
    one lease period, after which the holder has either renewed its lease or lost it (so a
    job whose worker crashed runs again after one lease, not after a fixed minute)."""
    from hpoq.workers.context import lease_seconds

    return max(1.0, lease_seconds())


def _transient() -> tuple[type[BaseException], ...]:
    import redis
    from mlflow.exceptions import MlflowException

    from hpoq.errors import ServiceError

    return (
        redis.ConnectionError,
        redis.TimeoutError,
        ConnectionError,
        TimeoutError,
        MlflowException,
        ServiceError,  # a service we could not reach (MLflow experiment lookup, Redis)
    )


from hpoq.workers.worker_app import app  # noqa: E402 - tasks register on the worker's app


class Outcome(Protocol):
    def to_json(self) -> dict[str, Any]: ...
    def failure(self) -> str | None: ...


def _parse(task: Task, payload: Any, model: type[J]) -> J:
    """The job; a malformed payload is rejected, logged, dead-lettered, never executed or
    retried (JobRejected: a FAILURE with the reason)."""
    try:
        return parse_job(payload, model)
    except InputError as exc:
        log.error("rejected job %s: %s", task.request.id, exc)
        queue = (task.request.delivery_info or {}).get("routing_key") or "?"
        dead_letter_signals.record(
            coordination_url(task.app),
            f"invalid job payload: {exc}",
            str(queue),
            json.dumps(payload, default=str),
        )
        raise JobRejected(f"rejected: {exc}") from None


def _settle(outcome: Outcome) -> dict[str, Any]:
    """The task's result, or JobFailed for a job that failed for good (recorded by now).

    JobFailed is in each task's `throws`: Celery stores FAILURE and sends task-failed without
    a retry or a logged traceback, and acks the late-acknowledged message
    (task_acks_on_failure_or_timeout), so it is never delivered again."""
    failure = outcome.failure()
    if failure is not None:
        raise JobFailed(failure)
    return outcome.to_json()


def _execute(
    task: Task,
    job: J,
    execute: Callable[[J, WorkerContext], T],
    on_final_failure: Callable[[J, WorkerContext, BaseException], None] | None = None,
) -> tuple[WorkerContext, T]:
    """Run a job; in flight elsewhere -> check again later; transient error -> bounded
    retries with backoff and jitter, then `on_final_failure`; any other error ->
    `on_final_failure` at once (it will not go away by retrying)."""
    from hpoq.core.retry import backoff_delay

    ctx = worker_context(coordination_url(task.app))
    try:
        return ctx, execute(job, ctx)
    except JobInFlight as exc:
        raise task.retry(exc=exc, countdown=in_flight_recheck_s()) from None
    except _transient() as exc:
        if task.request.retries >= MAX_TRANSIENT_RETRIES:
            if on_final_failure is not None:
                on_final_failure(job, ctx, exc)
            raise
        delay = 1 + backoff_delay(task.request.retries, 2.0, 60.0)
        raise task.retry(exc=exc, countdown=delay) from None
    except Exception as exc:
        if on_final_failure is not None:
            on_final_failure(job, ctx, exc)
        raise
    finally:
        release_accelerator_memory()
        if _in_pool_process["yes"]:
            # The first job loads torch and the objective's modules: freeze those too.
            freeze_loaded_objects()


@app.task(name=TASK_RUN_TRIAL, bind=True, acks_late=True, max_retries=None, throws=(JobFailed,))
def run_trial(self: Task, payload: Any) -> dict[str, Any]:
    from hpoq.workers.follow_ups import send_follow_ups
    from hpoq.workers.trial_runner import execute_trial

    job = _parse(self, payload, TrialJob)
    ctx, outcome = _execute(self, job, execute_trial)
    send_follow_ups(job, ctx, self.app, outcome)
    return _settle(outcome)


@app.task(name=TASK_RUN_BENCHMARK, bind=True, acks_late=True, max_retries=None, throws=(JobFailed,))
def run_benchmark(self: Task, payload: Any) -> dict[str, Any]:
    from hpoq.workers.benchmark_job import execute_benchmark, record_final_failure

    job = _parse(self, payload, BenchmarkJob)

    def give_up(job: BenchmarkJob, ctx: WorkerContext, exc: BaseException) -> None:
        record_final_failure(job, ctx, f"{type(exc).__name__}: {exc}")

    _, outcome = _execute(self, job, execute_benchmark, give_up)
    return _settle(outcome)


@app.task(
    name=TASK_RUN_FINAL_TRAINING, bind=True, acks_late=True, max_retries=None, throws=(JobFailed,)
)
def run_final_training(self: Task, payload: Any) -> dict[str, Any]:
    from hpoq.workers.final_training import (
        FinalOutcome,
        benchmark_final,
        execute_final_training,
        record_final_failure,
        record_rejected_final,
    )

    try:
        job = _parse(self, payload, FinalTrainingJob)
    except JobRejected as exc:
        if self.request.id:  # the producer sends each job under its job id
            ctx = worker_context(coordination_url(self.app))
            record_rejected_final(ctx, str(self.request.id), str(exc))
        raise

    def give_up(job: FinalTrainingJob, ctx: WorkerContext, exc: BaseException) -> None:
        record_final_failure(job, ctx, f"{type(exc).__name__}: {exc}")

    ctx, outcome = _execute(self, job, execute_final_training, give_up)
    if outcome.failure() is None:
        try:
            jobs = benchmark_final(job, ctx, self.app)
        except Exception as exc:  # `hpoq benchmark` (and `hpoq run`) enqueue it again
            log.warning("benchmark of final model %s not enqueued: %s", job.study_name, exc)
        else:
            outcome = FinalOutcome(
                outcome.status, outcome.name, outcome.run_id, outcome.error, tuple(jobs)
            )
    return _settle(outcome)
