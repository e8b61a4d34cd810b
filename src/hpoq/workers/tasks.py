"""Celery tasks: validate the payload, bound deliveries, call the plain job function.

Loaded only inside worker processes (through the app's `include`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown

from hpoq.core.jobs import TASK_RUN_BENCHMARK, TASK_RUN_TRIAL, BenchmarkJob, TrialJob, parse_job
from hpoq.errors import InputError
from hpoq.workers.context import WorkerContext

log = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 5
IN_FLIGHT_RECHECK_S = 60

_context: WorkerContext | None = None


def worker_context(app_broker_url: str) -> WorkerContext:
    """The process's context, built on first use (after the prefork child has started)."""
    global _context
    if _context is None:
        _context = WorkerContext.create(app_broker_url)
    return _context


@worker_process_init.connect
def _fresh_child(**_: Any) -> None:
    # A forked child must not reuse the parent's sockets.
    global _context
    _context = None
    # Warm the child once, before its first job: these imports take seconds.
    import mlflow.tracking  # noqa: F401
    import optuna  # noqa: F401


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    if _context is not None:
        _context.redis.close()


def _transient() -> tuple[type[BaseException], ...]:
    import redis
    from mlflow.exceptions import MlflowException

    return (
        redis.ConnectionError,
        redis.TimeoutError,
        ConnectionError,
        TimeoutError,
        MlflowException,
    )


def release_accelerator_memory() -> None:
    """Free cached GPU memory between jobs without restarting the warm process."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


from hpoq.workers.worker_app import app  # noqa: E402 - tasks register on the worker's app


@app.task(name=TASK_RUN_TRIAL, bind=True, acks_late=True, max_retries=None)
def run_trial(self: Task, payload: Any) -> dict[str, Any]:
    from hpoq.workers.trial_runner import InFlightElsewhere, execute_trial

    try:
        job = parse_job(payload, TrialJob)
    except InputError as exc:
        # Rejected, logged, never executed, never retried.
        log.error("rejected job %s: %s", self.request.id, exc)
        return {"status": "rejected", "error": str(exc)}
    ctx = worker_context(self.app.conf.broker_url)
    try:
        outcome = execute_trial(job, ctx)
    except InFlightElsewhere as exc:
        raise self.retry(exc=exc, countdown=IN_FLIGHT_RECHECK_S) from None
    except _transient() as exc:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            raise
        from hpoq.core.retry import backoff_delay

        raise self.retry(
            exc=exc, countdown=1 + backoff_delay(self.request.retries, 2.0, 60.0)
        ) from None
    finally:
        release_accelerator_memory()
    if outcome.variant_complete:
        from hpoq.workers.events import on_variant_complete

        on_variant_complete(job, ctx, self.app)
    for reaped in outcome.reaped:
        if reaped.retired_first:
            from hpoq.workers.events import enqueue_replacement

            enqueue_replacement(job, ctx, self.app, reaped)
    return outcome.to_json()


@app.task(name=TASK_RUN_BENCHMARK, bind=True, acks_late=True, max_retries=None)
def run_benchmark(self: Task, payload: Any) -> dict[str, Any]:
    from hpoq.workers.benchmark_job import BenchmarkInFlight, execute_benchmark

    try:
        job = parse_job(payload, BenchmarkJob)
    except InputError as exc:
        log.error("rejected job %s: %s", self.request.id, exc)
        return {"status": "rejected", "error": str(exc)}
    ctx = worker_context(self.app.conf.broker_url)
    try:
        outcome = execute_benchmark(job, ctx)
    except BenchmarkInFlight as exc:
        raise self.retry(exc=exc, countdown=IN_FLIGHT_RECHECK_S) from None
    except _transient() as exc:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            from hpoq.workers.benchmark_job import record_final_failure

            record_final_failure(job, ctx, f"{type(exc).__name__}: {exc}")
            raise
        from hpoq.core.retry import backoff_delay

        raise self.retry(
            exc=exc, countdown=1 + backoff_delay(self.request.retries, 2.0, 60.0)
        ) from None
    finally:
        release_accelerator_memory()
    return outcome.to_json()
