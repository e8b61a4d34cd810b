"""Enqueueing benchmark jobs exactly once per key: the one path used by `hpoq benchmark`,
by `retry-failed` and by a worker whose variant just finished.

For each candidate: skip it when measured (unless forced), skip it when its lease is held
(in flight: never two at once, whatever the mode), else take the lease with the new job's
id as owner (SET NX), ask once more whether it is measured (a job that published and let
the key go between the first check and the lease), take a fencing number, record the job
for the reaper (which enqueues the key again should its lease lapse) and send the job. A
send that fails gives the lease back and forgets the job, so nothing is left half-done.
Before the first job is built, the experiment's data files are published by content
(nothing is uploaded when they already are; an experiment taken from a job is portable
already), so a job names no path of this host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hpoq.config.base import RunMode
from hpoq.config.experiment import Experiment
from hpoq.core.benchmark_index import Candidate, cached_keys
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.job_inputs import content_store, portable_experiment
from hpoq.core.jobs import QUEUE_BENCHMARK, TASK_RUN_BENCHMARK, BenchmarkJob, new_job_id
from hpoq.core.measured_keys import finished_keys
from hpoq.core.runtime import Runtime
from hpoq.errors import ServiceError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# A queued job holds its key this long before anyone may enqueue it again; the worker that
# starts it swaps in a short lease kept alive by a heartbeat.
DEFAULT_QUEUED_LEASE_S = 6 * 3600


class TaskSender(Protocol):
    def send_task(self, name: str, args: Any = ..., **options: Any) -> Any: ...


@dataclass
class DispatchReport:
    enqueued: list[dict[str, Any]] = field(default_factory=list)
    skipped_done: list[dict[str, Any]] = field(default_factory=list)
    skipped_in_flight: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "enqueued": self.enqueued,
            "skipped_done": self.skipped_done,
            "skipped_in_flight": self.skipped_in_flight,
        }

    @property
    def job_ids(self) -> list[str]:
        return [item["job_id"] for item in self.enqueued]


def candidate_of(job: BenchmarkJob) -> Candidate:
    """The candidate a benchmark job was made for (to enqueue its key again)."""
    return Candidate(
        backbone=job.backbone,
        study_name=job.study_name,
        variant=job.variant,
        trial_number=job.trial_number,
        trial_id=job.trial_id,
        run_id=job.run_id,
        key=job.benchmark_key,
    )


def measured_keys(
    experiment: Experiment, runtime: Runtime, client: MlflowClient, keys: list[str]
) -> set[str]:
    """Keys with a measurement in MLflow or a disk cache file (MLflow asked once for all)."""
    in_mlflow = set(finished_keys(client, experiment.benchmark_experiment_name, keys))
    wanted = set(keys)
    return (wanted & in_mlflow) | cached_keys(runtime.layout, wanted - in_mlflow)


def dispatch(
    experiment: Experiment,
    runtime: Runtime,
    candidates: list[Candidate],
    *,
    mode: RunMode,
    leases: BenchmarkLeases,
    sender: TaskSender,
    client: MlflowClient,
    queued_lease_s: float = DEFAULT_QUEUED_LEASE_S,
) -> DispatchReport:
    report = DispatchReport()
    force = mode is RunMode.FORCE_NEW
    job_experiment: Experiment | None = None
    done = (
        set() if force else measured_keys(experiment, runtime, client, [c.key for c in candidates])
    )
    for candidate in candidates:
        item = candidate.to_json()
        if candidate.key in done:
            report.skipped_done.append(item)
            continue
        if job_experiment is None:
            job_experiment = portable_experiment(experiment, content_store(runtime, client))
        job_id = new_job_id("bench")
        if not leases.acquire(candidate.key, job_id, queued_lease_s):
            report.skipped_in_flight.append(item)
            continue
        if not force and measured_keys(experiment, runtime, client, [candidate.key]):
            # Measured between the check above and the lease: its job had published and
            # let the key go. Asked again under the lease, the answer is final.
            leases.release(candidate.key, job_id)
            report.skipped_done.append(item)
            continue
        job = BenchmarkJob(
            job_id=job_id,
            experiment=job_experiment,
            backbone=candidate.backbone,
            study_name=candidate.study_name,
            variant=candidate.variant,
            trial_number=candidate.trial_number,
            trial_id=candidate.trial_id,
            run_id=candidate.run_id,
            benchmark_key=candidate.key,
            fence=leases.next_fence(candidate.key),
            force=force,
        )
        leases.register(job_id, job.model_dump_json())
        try:
            sender.send_task(
                TASK_RUN_BENCHMARK, args=[job.to_payload()], queue=QUEUE_BENCHMARK, task_id=job_id
            )
        except Exception as exc:
            leases.finish(candidate.key, job_id, job_id)
            raise ServiceError(
                f"could not enqueue the benchmark of {candidate.key}: {exc}"
            ) from None
        report.enqueued.append({**item, "job_id": job_id})
    return report
