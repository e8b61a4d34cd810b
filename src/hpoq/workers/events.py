"""What a worker enqueues on its own: replacements for reaped trials, and the benchmark
of a variant whose last trial has finished."""

from __future__ import annotations

import logging
from typing import Any

from hpoq.config.base import RunMode
from hpoq.config.benchmark import BenchmarkStrategy
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.jobs import QUEUE_HPO, TASK_RUN_TRIAL, TrialJob
from hpoq.workers.context import WorkerContext
from hpoq.workers.deliveries import replacement_job_id
from hpoq.workers.reaper import Reaped

log = logging.getLogger(__name__)


def enqueue_replacement(job: TrialJob, ctx: WorkerContext, app: Any, reaped: Reaped) -> str:
    """A new job for the slot a dead worker's trial held (same variant, same lineage)."""
    lost = reaped.job_id or job.job_id
    replacement = job.model_copy(update={"job_id": replacement_job_id(lost)})
    study_key = study_key_hash(job.backbone, job.study_name)
    ctx.budget.add_pending(study_key, [replacement.job_id])
    app.send_task(
        TASK_RUN_TRIAL,
        args=[replacement.to_payload()],
        queue=QUEUE_HPO,
        task_id=replacement.job_id,
    )
    log.info("enqueued %s to replace reaped trial %d", replacement.job_id, reaped.trial_number)
    return replacement.job_id


def on_variant_complete(job: TrialJob, ctx: WorkerContext, app: Any) -> list[str]:
    """The variant reached n_trials: enqueue its benchmark through the same dedupe path as
    `hpoq benchmark` (several workers finishing at once still enqueue it once)."""
    from hpoq.core.benchmark_dispatch import dispatch
    from hpoq.core.benchmark_index import select_candidates
    from hpoq.core.coordination.leases import BenchmarkLeases

    experiment = job.experiment
    candidates, _, _ = select_candidates(
        experiment, ctx.runtime, backbones=[job.backbone], client=ctx.mlflow
    )
    if experiment.benchmark.benchmark_strategy is BenchmarkStrategy.LATEST_ONLY:
        wanted = [c for c in candidates if c.study_name == job.study_name]
    else:
        wanted = [c for c in candidates if c.variant == job.variant]
    # Never forced from here: re-measuring is something a person asks for with
    # `hpoq benchmark --run-mode force_new`, not something every late job repeats.
    report = dispatch(
        experiment,
        ctx.runtime,
        wanted,
        mode=RunMode.REUSE_IF_EXISTS,
        leases=BenchmarkLeases(ctx.redis, ctx.keys),
        sender=app,
        client=ctx.mlflow,
    )
    log.info(
        "variant %s of %s complete: benchmark jobs %s",
        job.study_name,
        job.backbone,
        report.job_ids or "none needed",
    )
    return report.job_ids
