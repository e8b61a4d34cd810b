"""What a worker enqueues on its own: replacements for reaped trials, and the benchmark
of a variant whose last trial has finished."""

from __future__ import annotations

import logging
from typing import Any

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
        TASK_RUN_TRIAL, args=[replacement.to_payload()], queue=QUEUE_HPO,
        task_id=replacement.job_id,
    )  # fmt: skip
    log.info("enqueued %s to replace reaped trial %d", replacement.job_id, reaped.trial_number)
    return replacement.job_id


def on_variant_complete(job: TrialJob, ctx: WorkerContext, app: Any) -> None:
    """The variant reached n_trials: its benchmark is enqueued (same dedupe path)."""
    log.info("variant %s of %s complete", job.study_name, job.backbone)
