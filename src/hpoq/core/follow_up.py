"""Jobs that follow from others, enqueued by a worker or by the reaper: the replacement of
a failed or lost trial, and the benchmark of a variant that has finished.

Both are idempotent: a replacement has a deterministic job id (sending it twice runs one
trial: its second delivery finds the job done or in flight), and a benchmark goes through
the same dedupe path as `hpoq benchmark` (measured or in flight: not enqueued again).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hpoq.config.base import RunMode
from hpoq.config.benchmark import BenchmarkStrategy
from hpoq.core.benchmark_dispatch import TaskSender, dispatch
from hpoq.core.benchmark_index import select_candidates
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.jobs import QUEUE_HPO, TASK_RUN_TRIAL, TrialJob

if TYPE_CHECKING:
    import redis
    from mlflow.tracking import MlflowClient

    from hpoq.core.coordination.keys import RedisKeys
    from hpoq.core.runtime import Runtime

log = logging.getLogger(__name__)


def send_trial_job(sender: TaskSender, job: TrialJob) -> None:
    sender.send_task(TASK_RUN_TRIAL, args=[job.to_payload()], queue=QUEUE_HPO, task_id=job.job_id)


def send_replacement(sender: TaskSender, job: TrialJob, replacement_id: str) -> TrialJob:
    """Send the job that replaces `job` (same variant; its id already pending)."""
    replacement = job.model_copy(update={"job_id": replacement_id})
    send_trial_job(sender, replacement)
    log.info("enqueued %s to replace %s", replacement_id, job.job_id)
    return replacement


def benchmark_variant(
    job: TrialJob,
    runtime: Runtime,
    client: redis.Redis,
    keys: RedisKeys,
    mlflow: MlflowClient,
    sender: TaskSender,
) -> list[str]:
    """The variant of `job` has finished: enqueue the benchmark of its best completed
    trial through the same dedupe path as `hpoq benchmark` (several workers finishing at
    once still enqueue it once). Never forced: re-measuring is something a person asks for
    with `hpoq benchmark --run-mode force_new`, not something every late job repeats."""
    experiment = job.experiment
    candidates, _, _ = select_candidates(
        experiment, runtime, backbones=[job.backbone], client=mlflow
    )
    if experiment.benchmark.benchmark_strategy is BenchmarkStrategy.LATEST_ONLY:
        wanted = [c for c in candidates if c.study_name == job.study_name]
    else:
        wanted = [c for c in candidates if c.variant == job.variant]
    report = dispatch(
        experiment,
        runtime,
        wanted,
        mode=RunMode.REUSE_IF_EXISTS,
        leases=BenchmarkLeases(client, keys),
        sender=sender,
        client=mlflow,
    )
    log.info(
        "variant %s of %s finished: benchmark jobs %s",
        job.study_name,
        job.backbone,
        report.job_ids or "none needed",
    )
    return report.job_ids
