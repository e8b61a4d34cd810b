"""The reaper: recovery from dead workers with nobody typing a command.

Every worker runs one (workers/reaper_thread.py); they take turns under a Redis lock
(redis-py's Lock: SET NX PX with an owner token, released by compare-and-delete), one pass
every third of a lease. A pass:

1. records itself (reaper_watch.py) and learns whether the claims can be believed: not
   after Redis lost its data or while nobody could reach it, until every live holder has
   had a lease to renew;
2. for every watched variant (active_variants.py): takes, in one script on Redis's clock,
   the lapsed claims and the RUNNING trials' jobs that stayed without a claim for a lease
   (budget.py `reap`); their trials become FAIL, their MLflow runs FAILED, and their
   replacement jobs (pending in the same script) are sent, while the variant replaces
   failures (`max_failed_trials`). A variant that has finished, however it finished, is
   retired and its best completed trial benchmarked;
3. for every registered benchmark job whose lease lapsed: enqueues its key again, with a
   new fencing number, so the stale job publishes nothing if it ever comes back.

A job whose worker died keeps its message in Redis's `unacked` until the visibility
timeout (12 h by default); when it comes back it finds its job done (a reaped trial job)
or superseded (a benchmark job), and does nothing. On RabbitMQ the message comes back at
once, while the dead worker's claim still holds: it waits out the lease (JobInFlight) and
then finds the same. A RUNNING trial without a job id
(written by hand or by an older process) is failed after `stale_trial_grace_seconds`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from hpoq.config.base import RunMode
from hpoq.core.benchmark_dispatch import TaskSender, candidate_of, dispatch
from hpoq.core.coordination.active_variants import ActiveVariants
from hpoq.core.coordination.budget import ReapCandidate, TrialBudget
from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.coordination.reaper_watch import ReaperWatch
from hpoq.core.follow_up import benchmark_variant, send_replacement
from hpoq.core.jobs import BenchmarkJob, TrialJob, replacement_job_id
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR, fail_trial
from hpoq.core.variant_state import variant_progress
from hpoq.core.variants import VariantRef

if TYPE_CHECKING:
    import optuna
    import redis
    from mlflow.tracking import MlflowClient

    from hpoq.core.runtime import Runtime
    from hpoq.core.studies import StudyStore

log = logging.getLogger(__name__)

LOST_REASON = "worker lost: its claim lapsed"


@dataclass
class ReapReport:
    trusted: bool
    reaped: list[dict[str, Any]] = field(default_factory=list)  # study, trial, job id
    replacements: list[str] = field(default_factory=list)
    benchmarks_requeued: list[str] = field(default_factory=list)  # new job ids
    variants_finished: list[str] = field(default_factory=list)  # study names


class Reaper:
    """One process's reaper. `mlflow` builds the client when first needed."""

    def __init__(
        self,
        runtime: Runtime,
        client: redis.Redis,
        keys: RedisKeys,
        sender: TaskSender,
        mlflow: Callable[[], MlflowClient],
        lease_s: float,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.keys = keys
        self.sender = sender
        self.lease_s = lease_s
        self._mlflow_factory = mlflow
        self._mlflow: MlflowClient | None = None
        self.budget = TrialBudget(client, keys)
        self.variants = ActiveVariants(client, keys)
        self.leases = BenchmarkLeases(client, keys)
        self.watch = ReaperWatch(client, keys)
        self._stores: dict[str, StudyStore] = {}

    @property
    def mlflow(self) -> MlflowClient:
        if self._mlflow is None:
            self._mlflow = self._mlflow_factory()
        return self._mlflow

    def run_once(self) -> ReapReport | None:
        """One pass under the cluster-wide lock; None when another reaper holds it."""
        lock = self.client.lock(self.keys.reaper_lock(), timeout=max(1.0, self.lease_s))
        if not lock.acquire(blocking=False):
            return None
        try:
            trusted, _ = self.watch.record_pass(self.lease_s)
            report = ReapReport(trusted)
            for study_key, raw in self.variants.variants().items():
                try:
                    self._variant(study_key, raw, report)
                except Exception:  # one broken variant must not stop the others
                    log.exception("reaper: variant %s", study_key)
            if trusted:
                self._benchmarks(report)
            self.watch.finish_pass()
            return report
        finally:
            try:
                lock.release()
            except Exception as exc:  # expired meanwhile: the next pass is idempotent
                log.warning("reaper: lock not released: %s", exc)

    # --- trials -------------------------------------------------------------------------

    def _store(self, job: TrialJob) -> StudyStore:
        checkpoint = job.experiment.hpo.checkpoint
        key = checkpoint.model_dump_json()
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = self.runtime.study_store(checkpoint)
        return store

    def _variant(self, study_key: str, raw: str, report: ReapReport) -> None:
        from optuna.trial import TrialState

        try:
            job = TrialJob.model_validate_json(raw)
        except ValidationError:
            log.error("reaper: unreadable variant entry %s dropped", study_key)
            self.variants.forget(study_key)
            return
        hpo = job.experiment.hpo
        ref = VariantRef(job.backbone, job.variant, job.study_name)
        store = self._store(job)
        study = store.load(ref)
        if study is None:
            self.variants.forget(study_key)
            return
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        by_job = {str(t.user_attrs[JOB_ID_ATTR]): t for t in running if JOB_ID_ATTR in t.user_attrs}
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        jobs = sorted(set(self.budget.claimed_jobs(study_key)) | set(by_job))
        reaped = self.budget.reap(
            study_key,
            [ReapCandidate(j, replacement_job_id(j), j in by_job) for j in jobs],
            trusted=report.trusted,
            lease_s=self.lease_s,
            replacements_allowed=hpo.failure_bound - failed,
        )
        storage = store.storage_for(ref.backbone, ref.study_name)
        for item in reaped:
            trial = by_job.get(item.job_id)
            if trial is not None and fail_trial(storage, ref.study_name, trial.number):
                log.warning(
                    "reaped trial %d of %s (job %s)", trial.number, ref.study_name, item.job_id
                )
                report.reaped.append(
                    {"study_name": ref.study_name, "trial": trial.number, "job_id": item.job_id}
                )
                self._record_lost(job, ref, trial)
            if item.replacement_id:
                send_replacement(self.sender, job, item.replacement_id)
                report.replacements.append(item.replacement_id)
        if report.trusted:
            self._unnamed(study, job, ref, storage, report)
        self._maybe_finished(study_key, job, study, report)

    def _unnamed(
        self, study: optuna.Study, job: TrialJob, ref: VariantRef, storage: Any, report: ReapReport
    ) -> None:
        """RUNNING trials without a job id: failed once older than the grace period."""
        from optuna.trial import TrialState

        now = time.time()
        grace = job.experiment.hpo.stale_trial_grace_seconds
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if JOB_ID_ATTR in trial.user_attrs or trial.datetime_start is None:
                continue
            if now - trial.datetime_start.timestamp() > grace and fail_trial(
                storage, ref.study_name, trial.number
            ):
                report.reaped.append({"study_name": ref.study_name, "trial": trial.number})
                self._record_lost(job, ref, trial)

    def _record_lost(self, job: TrialJob, ref: VariantRef, trial: Any) -> None:
        """The reaped trial's MLflow run FAILED, or a FAILED run logged for it."""
        from hpoq.core.tracking import artifact_root, ensure_experiment
        from hpoq.core.trial_tracking import fail_run, lost_trial_recorder

        experiment = job.experiment
        try:
            run_id = trial.user_attrs.get(RUN_ID_ATTR)
            if run_id:
                fail_run(self.mlflow, str(run_id), LOST_REASON, experiment.tags.benchmark.error)
                return
            client = self.mlflow
            record = lost_trial_recorder(
                client,
                lambda: ensure_experiment(
                    client,
                    experiment.hpo_experiment_name,
                    artifact_root(self.runtime.layout, self.runtime.mlflow_uri()),
                ),
                experiment,
                ref,
            )
            record(trial, LOST_REASON)
        except Exception as exc:  # the trial is reaped either way
            log.warning("could not record lost trial %d in MLflow: %s", trial.number, exc)

    def _maybe_finished(
        self, study_key: str, job: TrialJob, study: optuna.Study, report: ReapReport
    ) -> None:
        hpo = job.experiment.hpo
        status = self.budget.status(study_key, lost_after_s=hpo.stale_trial_grace_seconds)
        progress = variant_progress(study.get_trials(deepcopy=False), hpo, status)
        if not progress.over or not self.variants.retire(study_key):
            return
        report.variants_finished.append(job.study_name)
        if progress.finished == 0:
            return
        try:
            benchmark_variant(job, self.runtime, self.client, self.keys, self.mlflow, self.sender)
        except Exception:
            self.variants.register(study_key, job.model_dump_json())  # try again next pass
            raise

    # --- benchmarks ---------------------------------------------------------------------

    def _benchmarks(self, report: ReapReport) -> None:
        entries = self.leases.jobs()
        jobs: list[tuple[str, BenchmarkJob]] = []
        for job_id, raw in entries.items():
            try:
                jobs.append((raw, BenchmarkJob.model_validate_json(raw)))
            except ValidationError:
                log.error("reaper: unreadable benchmark entry %s dropped", job_id)
                self.leases.unregister(job_id)
        holders = self.leases.holders([job.benchmark_key for _, job in jobs])
        for (raw, job), holder in zip(jobs, holders, strict=True):
            if holder is not None:
                if holder != job.job_id and not holder.startswith(f"{job.job_id}@"):
                    self.leases.unregister(job.job_id)  # a newer job holds the key
                continue
            if not self.leases.unregister(job.job_id):
                continue  # finished (or handled) meanwhile
            try:
                self._requeue(raw, job, report)
            except Exception:
                log.exception("reaper: could not enqueue %s again", job.benchmark_key)
                self.leases.register(job.job_id, raw)

    def _requeue(self, raw: str, job: BenchmarkJob, report: ReapReport) -> None:
        again = dispatch(
            job.experiment,
            self.runtime,
            [candidate_of(job)],
            mode=RunMode.FORCE_NEW if job.force else RunMode.REUSE_IF_EXISTS,
            leases=self.leases,
            sender=self.sender,
            client=self.mlflow,
        )
        if again.skipped_in_flight:  # its worker took the lease back meanwhile
            self.leases.register(job.job_id, raw)
        if again.job_ids:
            log.warning(
                "benchmark of %s: lease lapsed, enqueued again as %s",
                job.benchmark_key,
                again.job_ids[0],
            )
        report.benchmarks_requeued += again.job_ids
