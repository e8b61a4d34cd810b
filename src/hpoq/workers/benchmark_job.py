"""One benchmark job: take over the key's lease, re-check, measure, publish, release.

Order, and why:
1. take the lease over from the enqueuing producer (owner = job id); if another worker
   holds it, the job is in flight elsewhere;
2. re-check: a newer job for the key (higher fence) supersedes this one; a result that
   already exists ends it (unless forced, and then only a result of an older fence);
3. measure under a heartbeat that keeps the lease alive, with the device to itself (an
   exclusive turn: the trials running on it end first, and none starts until the
   measurement is done; see device_turns);
4. publish only while the lease is still ours and our fence is the key's latest: one
   MLflow run (tag benchmark_key, the fence, the metrics), then the disk cache (atomic),
   then the run is set FINISHED. MLflow calls are retried on that one run, so a lost
   reply never leaves two FINISHED runs for a key; a cache that cannot be written (disk
   full) fails the job instead of leaving a FINISHED run with no cache;
5. leave the registry of active jobs and release the lease, in one script (the reaper
   never takes a finished job for one whose worker died). A job that raises (to be
   retried) hands the lease back to its job id instead, as when it was queued.
A failure leaves a FAILED run tagged with the key and the error, remembered for
`hpoq benchmark retry-failed`, and frees the key. A worker that dies mid-measurement
lets its lease lapse; the reaper enqueues the key again under a new fence.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import redis

from hpoq.config.tags import BENCHMARK_KEY_TAG
from hpoq.core.benchmark_dispatch import DEFAULT_QUEUED_LEASE_S
from hpoq.core.benchmark_index import cache_path, read_cache
from hpoq.core.coordination.heartbeat import Heartbeat
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.jobs import BenchmarkJob, JobInFlight
from hpoq.core.measured_keys import is_measurement
from hpoq.core.objective import load_objective
from hpoq.core.trial_record import STAGE_BENCHMARK, write_json_atomic
from hpoq.core.variants import final_base_name, parse_variant
from hpoq.errors import HpoqError
from hpoq.workers.context import WorkerContext, lease_seconds

log = logging.getLogger(__name__)
Status = Literal["measured", "already_done", "superseded", "failed"]


class BenchmarkInFlight(JobInFlight):
    """Raised when another worker holds the key's lease."""


class CacheWriteFailed(HpoqError):
    """Raised when the result cannot be written to the disk cache (disk full, read-only)."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


@dataclass(frozen=True)
class BenchmarkOutcome:
    status: Status
    benchmark_key: str
    run_id: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "benchmark_key": self.benchmark_key,
            "run_id": self.run_id,
            "error": self.error,
        }

    def failure(self) -> str | None:
        """What went wrong, for a benchmark that failed for good; None otherwise."""
        if self.status != "failed":
            return None
        run = f" (MLflow run {self.run_id})" if self.run_id else ""
        return f"benchmark of {self.benchmark_key} failed: {self.error}{run}"


def checkpoint_dir(job: BenchmarkJob, ctx: WorkerContext) -> Path:
    """Where this host keeps the checkpoint: a final model's folder, or the trial's."""
    if parse_variant(final_base_name(job.backbone), job.study_name) == job.variant:
        return ctx.runtime.layout.final_variant_dir(job.backbone, job.study_name) / "checkpoint"
    return (
        ctx.runtime.layout.trial_dir(job.backbone, job.study_name, job.trial_number) / "checkpoint"
    )


def execute_benchmark(job: BenchmarkJob, ctx: WorkerContext) -> BenchmarkOutcome:
    leases = BenchmarkLeases(ctx.redis, ctx.keys)
    key = job.benchmark_key
    owner = f"{job.job_id}@{socket.gethostname()}:{os.getpid()}"
    lease_s = lease_seconds()
    if not leases.transfer(key, job.job_id, owner, lease_s):
        if (leases.holder(key) or "").startswith(f"{job.job_id}@"):
            raise BenchmarkInFlight(f"{key}: another delivery of {job.job_id} is measuring it")
        return _superseded_or_busy(job, leases)
    finished = False
    try:
        if job.fence < leases.current_fence(key):
            finished = True
            return BenchmarkOutcome("superseded", key)
        existing = _existing_result(job, ctx)
        if existing is not None:
            finished = True
            return BenchmarkOutcome("already_done", key, run_id=existing)
        as_json = job.model_dump_json()
        beat = Heartbeat(
            lambda: leases.heartbeat(
                key, owner, lease_s, fence=job.fence, job_id=job.job_id, job=as_json
            ),
            lease_s / 3,
            job.job_id,
        )
        with beat:
            try:
                result = _measure(job, ctx)
            except redis.RedisError:
                raise  # the device's turns are out of reach: retried as a transient error
            except Exception as exc:
                text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                log.error("benchmark of %s failed: %s", key, text)
                run_id = _log_failure(job, ctx, text)
                finished = True
                return BenchmarkOutcome("failed", key, run_id=run_id, error=text)
        if beat.lost.is_set() or leases.current_fence(key) != job.fence:
            finished = True
            return BenchmarkOutcome("superseded", key)
        try:
            run_id = _publish(job, ctx, result)
        except CacheWriteFailed as exc:
            log.error("benchmark of %s not published: %s", key, exc)
            _log_failure(job, ctx, str(exc), run_id=exc.run_id)
            finished = True
            return BenchmarkOutcome("failed", key, run_id=exc.run_id, error=str(exc))
        finished = True
        return BenchmarkOutcome("measured", key, run_id=run_id)
    finally:
        if finished:
            leases.finish(key, owner, job.job_id)
        else:  # raised: queued again for its retry, the key still in its job's hands
            leases.transfer(key, owner, job.job_id, DEFAULT_QUEUED_LEASE_S)


def _superseded_or_busy(job: BenchmarkJob, leases: BenchmarkLeases) -> BenchmarkOutcome:
    """Someone else holds the key: a newer job (fence) supersedes us; else we wait."""
    if job.fence < leases.current_fence(job.benchmark_key):
        leases.unregister(job.job_id)
        return BenchmarkOutcome("superseded", job.benchmark_key)
    raise BenchmarkInFlight(
        f"{job.benchmark_key} is being measured by {leases.holder(job.benchmark_key)}"
    )


def _existing_result(job: BenchmarkJob, ctx: WorkerContext) -> str | None:
    """Run id (or 'disk') of a result this job must not repeat."""
    from hpoq.core.mlflow_queries import query_runs_by_tags

    runs = query_runs_by_tags(
        ctx.mlflow, [_experiment_id(job, ctx)], {BENCHMARK_KEY_TAG: job.benchmark_key}
    )
    for run in runs:
        if not is_measurement(run):
            continue
        fence = int(run.data.tags.get(job.experiment.tags.benchmark.fencing_token, "0") or 0)
        if not job.force or fence >= job.fence:
            return str(run.info.run_id)
    cached = read_cache(ctx.runtime.layout, job.benchmark_key)
    if cached is not None and (not job.force or int(cached.get("fence", 0)) >= job.fence):
        return str(cached.get("run_id") or "disk")
    return None


def _measure(job: BenchmarkJob, ctx: WorkerContext) -> Any:
    """Fetch what this host lacks (the test data, the trial's checkpoint), then measure."""
    from hpoq.core.job_inputs import local_data
    from hpoq.workers.checkpoint_store import ensure_local_checkpoint
    from hpoq.workers.device_turns import turn_owner

    runner = load_objective(job.experiment.benchmark.runner)
    store = ctx.content()
    data, data_dir = local_data(job.experiment, store)
    checkpoint = ensure_local_checkpoint(store, job.run_id, checkpoint_dir(job, ctx))
    with ctx.device_turns.exclusive(turn_owner(job.job_id), f"benchmark of {job.benchmark_key}"):
        return runner(checkpoint, data, data_dir, job.experiment.benchmark)


def _tags(job: BenchmarkJob, ctx: WorkerContext) -> dict[str, str]:
    t = job.experiment.tags
    return {
        BENCHMARK_KEY_TAG: job.benchmark_key,
        t.benchmark.fencing_token: str(job.fence),
        t.process.stage: STAGE_BENCHMARK,
        t.process.backbone: job.backbone,
        t.process.variant: str(job.variant),
        t.process.study_name: job.study_name,
        t.process.trial_number: str(job.trial_number),
        t.process.experiment: job.experiment.name,
        t.grouping.trial_key_hash: job.trial_id,
        "hpoq.hpo_run_id": job.run_id or "",
        "hpoq.worker": ctx.hostname,
    }


def _experiment_id(job: BenchmarkJob, ctx: WorkerContext) -> str:
    return ctx.experiment_id(job.experiment.benchmark_experiment_name)


def _open_run(job: BenchmarkJob, ctx: WorkerContext, tags: dict[str, str]) -> str:
    """A new RUNNING run for the job's key in the benchmark experiment."""
    run_name = f"bench-{job.study_name}-trial-{job.trial_number}"
    return ctx.in_experiment(
        job.experiment.benchmark_experiment_name,
        lambda experiment_id: str(
            ctx.mlflow.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
        ),
    )


def result_metrics(result: Any) -> dict[str, float]:
    """Flat MLflow metrics, one group per (precision, padding, batch size): sorted batches
    as `{precision}_bs{N}_...`, fixed-length ones labelled `{precision}_bs{N}_fixed_...`."""
    metrics: dict[str, float] = {}
    for entry in result.entries:
        label = "_fixed" if entry.padding.value == "fixed" else ""
        prefix = f"{entry.precision.value}_bs{entry.batch_size}{label}"
        if entry.status != "ok" or entry.latency_ms is None:
            metrics[f"{prefix}_oom"] = 1.0
            continue
        metrics[f"{prefix}_latency_p50_ms"] = entry.latency_ms.p50
        metrics[f"{prefix}_latency_p95_ms"] = entry.latency_ms.p95
        metrics[f"{prefix}_latency_p99_ms"] = entry.latency_ms.p99
        if entry.throughput_sentences_per_s is not None:
            metrics[f"{prefix}_throughput_sentences_per_s"] = entry.throughput_sentences_per_s
        if entry.throughput_tokens_per_s is not None:
            metrics[f"{prefix}_throughput_tokens_per_s"] = entry.throughput_tokens_per_s
        if entry.peak_memory_mb is not None:
            metrics[f"{prefix}_peak_memory_mb"] = entry.peak_memory_mb
    return metrics


def _publish(job: BenchmarkJob, ctx: WorkerContext, result: Any) -> str:
    import time

    from mlflow.entities import Metric, Param

    from hpoq.core.retry import retry_call
    from hpoq.core.trial_tracking import transient_errors

    client = ctx.mlflow
    tags = _tags(job, ctx) | {"hpoq.device": result.device, "hpoq.device_name": result.device_name}
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in sorted(result_metrics(result).items())]
    params = [Param(k, str(v)) for k, v in sorted(result.config.items())]

    transient = transient_errors()
    run_id = retry_call(
        lambda: _open_run(job, ctx, tags), what="MLflow create benchmark run", retry_on=transient
    )
    payload = result.model_dump(mode="json")

    def log_result() -> None:  # idempotent: retried on the same run
        client.log_batch(run_id, metrics=metrics, params=params)
        client.log_dict(run_id, payload, "benchmark.json")

    try:
        retry_call(log_result, what="MLflow log benchmark", retry_on=transient)
        try:
            write_json_atomic(
                cache_path(ctx.runtime.layout, job.benchmark_key),
                {
                    "benchmark_key": job.benchmark_key,
                    "fence": job.fence,
                    "run_id": run_id,
                    "result": payload,
                },
            )
        except OSError as exc:
            raise CacheWriteFailed(f"cannot write the benchmark cache: {exc}", run_id) from None
        retry_call(
            lambda: client.set_terminated(run_id, status="FINISHED"),
            what="MLflow finish benchmark run",
            retry_on=transient,
        )
    except CacheWriteFailed:
        raise
    except BaseException:
        _abandon(client, run_id)
        raise
    return run_id


def _abandon(client: Any, run_id: str) -> None:
    """Best effort: a run that could not be completed is FAILED, not left RUNNING."""
    try:
        client.set_terminated(run_id, status="FAILED")
    except Exception as exc:
        log.warning("could not mark the abandoned benchmark run %s FAILED: %s", run_id, exc)


def record_final_failure(job: BenchmarkJob, ctx: WorkerContext, error: str) -> None:
    """A job that ran out of retries: FAILED run, remembered for retry-failed, key freed."""
    _log_failure(job, ctx, error)
    BenchmarkLeases(ctx.redis, ctx.keys).finish(job.benchmark_key, job.job_id, job.job_id)


def _log_failure(
    job: BenchmarkJob, ctx: WorkerContext, error: str, run_id: str | None = None
) -> str | None:
    """A FAILED run (`run_id`, else a new one) tagged with the key and the error; None when
    MLflow is unreachable."""
    try:
        error_tag = job.experiment.tags.benchmark.error
        if run_id is None:
            run_id = _open_run(job, ctx, _tags(job, ctx) | {error_tag: error[:5000]})
        else:
            ctx.mlflow.set_tag(run_id, error_tag, error[:5000])
        ctx.mlflow.set_terminated(run_id, status="FAILED")
        return run_id
    except Exception as exc:  # the failure is also kept in Redis for retry-failed
        log.warning("could not record the failed benchmark of %s: %s", job.benchmark_key, exc)
        return None
    finally:
        ctx.redis.hset(ctx.keys.failed_benchmarks(), job.benchmark_key, job.model_dump_json())
