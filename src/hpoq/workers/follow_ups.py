"""What a worker enqueues after a trial job: the replacement of a failed trial, and the
benchmark of a variant that has finished, however it finished. One function, so that the
task's return paths share it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpoq.core.benchmark_dispatch import TaskSender
from hpoq.core.coordination.active_variants import ActiveVariants
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.follow_up import benchmark_variant, send_replacement
from hpoq.core.jobs import TrialJob
from hpoq.workers.context import WorkerContext

if TYPE_CHECKING:
    from hpoq.workers.trial_runner import TrialOutcome


def send_follow_ups(
    job: TrialJob, ctx: WorkerContext, sender: TaskSender, outcome: TrialOutcome
) -> None:
    if outcome.replacement:
        send_replacement(sender, job, outcome.replacement)
    progress = outcome.progress
    if progress is None or not progress.over:
        return
    if progress.finished:
        benchmark_variant(job, ctx.runtime, ctx.redis, ctx.keys, ctx.mlflow, sender)
    # Refused while a job of the variant is still pending: the reaper retires it later.
    ActiveVariants(ctx.redis, ctx.keys).retire(study_key_hash(job.backbone, job.study_name))
