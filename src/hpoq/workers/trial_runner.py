"""One trial job, from claim to release. Plain function: the Celery task is a thin shell.

Order, and why:
1. reap trials of dead workers (frees their budget slots);
2. claim a budget slot (Redis) before ask(): duplicates and redeliveries never run more
   than n_trials trials;
3. ask(), record the job id on the trial;
4. run the objective under a heartbeat that keeps the claim alive, while a thread opens
   the trial's MLflow run (RUNNING) and records its id on the trial; a run that cannot
   be opened fails the trial once the objective returns;
5. tell() with skip_if_finished (a reaper may have failed the trial meanwhile), then
   log the state Optuna actually holds to MLflow and metrics.json;
6. release the claim (counted once) and report whether the variant is complete.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast

from hpoq.core.coordination.budget import Claim
from hpoq.core.coordination.heartbeat import Heartbeat
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.jobs import JobInFlight, TrialJob
from hpoq.core.objective import TrialContext, load_objective
from hpoq.core.optuna_setup import (
    JOB_ID_ATTR,
    RUN_ID_ATTR,
    count_finished,
    finished_job_ids,
    open_variant_study,
)
from hpoq.core.paths import OutputLayout
from hpoq.core.trial_record import TrialRecord, write_metrics_file
from hpoq.core.trial_tracking import finish_trial_run, lost_trial_recorder, start_trial_run
from hpoq.core.variants import VariantRef
from hpoq.workers.context import WorkerContext, lease_seconds
from hpoq.workers.deliveries import max_deliveries, record_delivery, root_job_id
from hpoq.workers.reaper import Reaped, reap_stale_trials

log = logging.getLogger(__name__)
T = TypeVar("T")

Status = Literal["completed", "pruned", "failed", "budget_full", "already_done", "gave_up"]
_STATUS_BY_STATE: dict[str, Status] = {"COMPLETE": "completed", "PRUNED": "pruned"}


class InFlightElsewhere(JobInFlight):
    """Raised when another delivery of the same job holds its live claim."""


class InBackground(Generic[T]):
    """`call()` on its own thread, started at once; `result()` waits for it and returns its
    value or raises its exception."""

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


@dataclass(frozen=True)
class TrialOutcome:
    status: Status
    study_name: str
    trial_number: int | None = None
    value: float | None = None
    run_id: str | None = None
    variant_complete: bool = False
    reaped: tuple[Reaped, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "study_name": self.study_name,
            "trial_number": self.trial_number,
            "value": self.value,
            "run_id": self.run_id,
            "variant_complete": self.variant_complete,
            "reaped": [r.trial_number for r in self.reaped],
        }


def execute_trial(job: TrialJob, ctx: WorkerContext) -> TrialOutcome:
    from optuna.trial import TrialState

    hpo = job.experiment.hpo
    ref = VariantRef(job.backbone, job.variant, job.study_name)
    store = ctx.study_store(hpo.checkpoint)
    layout: OutputLayout = ctx.runtime.layout
    study_key = study_key_hash(job.backbone, job.study_name)
    lease_s = lease_seconds()

    probe = open_variant_study(store, ref, hpo)
    reaped = reap_stale_trials(
        probe,
        study_key,
        ctx.budget,
        grace_s=hpo.stale_trial_grace_seconds,
        min_age_s=lease_s,
        mlflow=ctx.mlflow,
        error_tag=job.experiment.tags.benchmark.error,
        record_lost=lost_trial_recorder(
            ctx.mlflow,
            lambda: ctx.experiment_id(job.experiment.hpo_experiment_name),
            job.experiment,
            ref,
        ),
    )
    finished_jobs = finished_job_ids(probe)
    finished = len(finished_jobs)
    claim = ctx.budget.claim(study_key, job.job_id, hpo.n_trials, finished_jobs, lease_s)
    if claim is Claim.ALREADY_DONE:
        return TrialOutcome("already_done", job.study_name, reaped=tuple(reaped))
    if claim is Claim.IN_FLIGHT:
        raise InFlightElsewhere(f"job {job.job_id} is running on another worker")
    if claim is Claim.BUDGET_FULL:
        ctx.budget.mark_done(study_key, job.job_id)
        return TrialOutcome(
            "budget_full",
            job.study_name,
            variant_complete=finished >= hpo.n_trials,
            reaped=tuple(reaped),
        )

    deliveries = record_delivery(ctx, job.job_id)
    if deliveries > max_deliveries():
        reason = f"gave up after {deliveries - 1} deliveries that never finished"
        ctx.redis.hset(ctx.keys.failed_jobs(), root_job_id(job.job_id), reason)
        ctx.budget.release(study_key, job.job_id, counted=False)
        log.error("job %s: %s", job.job_id, reason)
        return TrialOutcome("gave_up", job.study_name, reaped=tuple(reaped))

    counted = False
    try:
        # Seed per trial from the history so parallel workers explore different points.
        study = open_variant_study(
            store, ref, hpo, seed_offset=len(probe.get_trials(deepcopy=False))
        )
        trial = study.ask()
        trial.set_user_attr(JOB_ID_ATTR, job.job_id)
        record_base = dict(
            experiment=job.experiment.name,
            backbone=job.backbone,
            study_name=job.study_name,
            variant=job.variant,
            trial_number=trial.number,
            metric=hpo.objective.metric,
        )
        started = TrialRecord(state="FAIL", value=None, params={}, **record_base)
        experiment_name = job.experiment.hpo_experiment_name

        def open_run() -> str:
            run_id = ctx.in_experiment(
                experiment_name,
                lambda experiment_id: start_trial_run(
                    ctx.mlflow, experiment_id, started, started.mlflow_tags(job.experiment.tags)
                ),
            )
            trial.set_user_attr(RUN_ID_ATTR, run_id)  # the reaper fails the run by this
            return run_id

        # The run is opened while the objective already works: MLflow's round trips (a
        # create_run is ~10 ms on SQLite, more on a tracking server) stay off the GPU's path.
        opening = InBackground(open_run, name=f"{job.job_id}-open-run")
        value, state, error = _run_objective(job, ctx, trial, ref, layout, lease_s, study_key)
        try:
            run_id = opening.result()
        except Exception:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        extra = {"hpoq.worker": ctx.hostname}
        if state is TrialState.COMPLETE:
            # MLflow before Optuna: a trial counts as COMPLETE only once its run holds the
            # result, so an MLflow outage past the retries fails the trial (a resume tops it
            # up) instead of leaving a COMPLETE trial whose run never finished.
            _upload_checkpoint(ctx, run_id, layout, job, trial.number)
            result = TrialRecord(
                state="COMPLETE",
                value=value,
                params=dict(trial.params),
                datetime_start=trial.datetime_start,
                datetime_complete=datetime.now(UTC),
                run_id=run_id,
                **record_base,
            )
            try:
                finish_trial_run(ctx.mlflow, run_id, result, extra)
            except Exception:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                _abandon_run(ctx, run_id)
                raise
        frozen = study.tell(
            trial,
            values=value if state is TrialState.COMPLETE else None,
            state=state,
            skip_if_finished=True,
        )
        final_state = frozen.state.name if frozen.state.is_finished() else "FAIL"
        record = TrialRecord(
            state=final_state,
            value=frozen.value if final_state == "COMPLETE" else _last_intermediate(frozen),
            params=dict(frozen.params),
            datetime_start=frozen.datetime_start,
            datetime_complete=frozen.datetime_complete or datetime.now(UTC),
            run_id=run_id,
            **record_base,
        )
        if error or (state is TrialState.COMPLETE and final_state != "COMPLETE"):
            from hpoq.core.trial_tracking import fail_run

            reason = error or "reaped while it ran: its claim lapsed"
            fail_run(ctx.mlflow, run_id, reason, job.experiment.tags.benchmark.error)
        elif state is not TrialState.COMPLETE:
            finish_trial_run(ctx.mlflow, run_id, record, extra)
        write_metrics_file(layout.trial_dir(job.backbone, job.study_name, trial.number), record)
        counted = final_state in ("COMPLETE", "PRUNED")
        status = _STATUS_BY_STATE.get(final_state, "failed")
        return TrialOutcome(
            status,
            job.study_name,
            trial.number,
            record.value,
            run_id,
            variant_complete=_complete(study, hpo.n_trials),
            reaped=tuple(reaped),
        )
    finally:
        ctx.budget.release(study_key, job.job_id, counted)


def _run_objective(
    job: TrialJob,
    ctx: WorkerContext,
    trial: Any,
    ref: VariantRef,
    layout: OutputLayout,
    lease_s: float,
    study_key: str,
) -> tuple[float | None, Any, str | None]:
    """Run the objective under a heartbeat. Returns (value, TrialState, error text)."""
    import optuna
    from optuna.trial import TrialState

    objective = load_objective(job.experiment.hpo.objective.function)
    context = TrialContext(
        hpo=job.experiment.hpo,
        study_name=ref.study_name,
        variant=ref.variant,
        study_dir=layout.study_dir(ref.backbone, ref.study_name),
        trial_dir=layout.trial_dir(ref.backbone, ref.study_name, trial.number),
        data_dir=Path(job.data_dir),
        device=None,
    )
    backbone = job.experiment.hpo.backbone(ref.backbone)
    beat = Heartbeat(
        lambda: ctx.budget.heartbeat(study_key, job.job_id, lease_s),
        interval_s=lease_s / 3,
        name=job.job_id,
    )
    with beat:
        try:
            value = float(objective(trial, backbone, job.experiment.data, context))
        except optuna.TrialPruned:
            return None, TrialState.PRUNED, None
        except Exception as exc:
            log.exception("objective failed in trial %d of %s", trial.number, ref.study_name)
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return None, TrialState.FAIL, text
    if value != value or value in (float("inf"), float("-inf")):
        return None, TrialState.FAIL, f"objective returned {value}"
    return value, TrialState.COMPLETE, None


def _abandon_run(ctx: WorkerContext, run_id: str) -> None:
    """Best effort, one try: a run whose trial failed is FAILED, not left RUNNING."""
    try:
        ctx.mlflow.set_terminated(run_id, status="FAILED")
    except Exception as exc:
        log.warning("could not mark MLflow run %s FAILED: %s", run_id, exc)


def _last_intermediate(trial: Any) -> float | None:
    values = trial.intermediate_values
    return float(values[max(values)]) if values else None


def _complete(study: Any, n_trials: int) -> bool:
    return count_finished(study) >= n_trials


def _upload_checkpoint(
    ctx: WorkerContext, run_id: str, layout: OutputLayout, job: TrialJob, number: int
) -> None:
    """Make the checkpoint reachable from other hosts; a failed upload only costs that."""
    from hpoq.workers.checkpoint_store import upload_checkpoint
    from hpoq.workers.training.checkpoints import open_checkpoint_for_reading

    checkpoint = layout.trial_dir(job.backbone, job.study_name, number) / "checkpoint"
    try:
        if checkpoint.is_dir():
            with open_checkpoint_for_reading(checkpoint):
                upload_checkpoint(ctx.mlflow, run_id, checkpoint)
    except Exception as exc:
        log.warning("checkpoint of trial %d not uploaded to MLflow: %s", number, exc)
