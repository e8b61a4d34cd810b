"""One trial job, from claim to release. Plain function: the Celery task is a thin shell.

Order, and why:
1. claim a budget slot (Redis) before ask(): duplicates and redeliveries never run more
   than n_trials trials; a RUNNING trial whose claim Redis lost still holds its slot;
2. ask(), record the job id on the trial (the reaper finds the trial by it);
3. run the objective, while a thread opens the trial's MLflow run (RUNNING) and records
   its id on the trial; a heartbeat keeps the claim alive from the claim to the release,
   and once the claim is lost `trial.should_prune()` answers yes, so the objective stops;
4. publish: MLflow first (a trial counts as COMPLETE only once its run holds the result),
   then confirm the claim is still ours and tell Optuna. A worker whose claim the reaper
   took (it was presumed dead) publishes nothing: its run is FAILED, its trial FAIL, it is
   not counted and not replaced (the reaper replaced it);
5. release the claim (counted once); a failed trial's replacement enters pending in the
   same step, while the variant replaces failures (`max_failed_trials`);
6. report where the variant stands, so the caller enqueues what follows.

Every failure after the trial exists ends the trial (FAIL, run FAILED) and returns an
outcome; only a failure before it exists raises, and then the slot is handed back so that
a retry of the job can claim again.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar, cast

from optuna.pruners import BasePruner

from hpoq.core.coordination.budget import Claim
from hpoq.core.coordination.heartbeat import Heartbeat
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.job_inputs import local_backbone, local_data
from hpoq.core.jobs import JobInFlight, TrialJob, replacement_job_id
from hpoq.core.objective import TrialContext, TrialMetrics, load_objective
from hpoq.core.optuna_setup import (
    JOB_ID_ATTR,
    RUN_ID_ATTR,
    job_ids,
    open_variant_study,
)
from hpoq.core.paths import OutputLayout
from hpoq.core.trial_record import TrialRecord, write_metrics_file
from hpoq.core.trial_tracking import fail_run, finish_trial_run, start_trial_run
from hpoq.core.variant_state import VariantProgress, VariantState, variant_progress
from hpoq.core.variants import VariantRef
from hpoq.workers.context import WorkerContext, lease_seconds
from hpoq.workers.deliveries import (
    finish_delivery,
    max_deliveries,
    record_delivery,
    record_gave_up,
)
from hpoq.workers.device_turns import run_sharing_device, turn_owner

log = logging.getLogger(__name__)
T = TypeVar("T")

Status = Literal["completed", "pruned", "failed", "lost", "budget_full", "already_done", "gave_up"]
LOST_CLAIM = "claim lost: the reaper took this trial's job while it ran (presumed dead)"
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
    error: str | None = None
    replacement: str | None = None  # pending; the caller sends it
    progress: VariantProgress | None = None  # where the variant stands after this job

    @property
    def variant_complete(self) -> bool:
        return self.progress is not None and self.progress.state is VariantState.COMPLETE

    def failure(self) -> str | None:
        """What went wrong, for a job that failed for good (its trial FAIL, lost, or none
        run); None otherwise."""
        if self.status not in ("failed", "lost", "gave_up"):
            return None
        what = f"trial {self.trial_number}" if self.trial_number is not None else "a trial job"
        run = f" (MLflow run {self.run_id})" if self.run_id else ""
        return f"{what} of {self.study_name} failed: {self.error or self.status}{run}"

    @property
    def variant_over(self) -> bool:
        """Nothing more will run in the variant: its benchmark may fire."""
        return self.progress is not None and self.progress.over

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "study_name": self.study_name,
            "trial_number": self.trial_number,
            "value": self.value,
            "run_id": self.run_id,
            "error": self.error,
            "replacement": self.replacement,
            "variant_complete": self.variant_complete,
            "variant": None if self.progress is None else self.progress.to_json(),
        }


@dataclass(frozen=True)
class _Slot:
    """What every step of one job needs."""

    job: TrialJob
    ctx: WorkerContext
    ref: VariantRef
    study_key: str
    lease_s: float

    def progress(self, study: Any) -> VariantProgress:
        hpo = self.job.experiment.hpo
        status = self.ctx.budget.status(self.study_key, hpo.stale_trial_grace_seconds)
        return variant_progress(study.get_trials(deepcopy=False), hpo, status)

    def heartbeat(self) -> bool:
        return self.ctx.budget.heartbeat(self.study_key, self.job.job_id, self.lease_s)


def execute_trial(job: TrialJob, ctx: WorkerContext) -> TrialOutcome:
    hpo = job.experiment.hpo
    ref = VariantRef(job.backbone, job.variant, job.study_name)
    store = ctx.study_store(hpo.checkpoint)
    slot = _Slot(job, ctx, ref, study_key_hash(job.backbone, job.study_name), lease_seconds())

    # One open and one read of the variant's trials serve the claim and the trial itself.
    study = open_variant_study(store, ref, hpo)
    finished, running = job_ids(study)
    claim = ctx.budget.claim(
        slot.study_key, job.job_id, hpo.n_trials, finished, slot.lease_s, running
    )
    if claim is Claim.ALREADY_DONE:
        return TrialOutcome("already_done", job.study_name)
    if claim is Claim.IN_FLIGHT:
        raise InFlightElsewhere(f"job {job.job_id} is running on another worker")
    if claim is Claim.BUDGET_FULL:
        ctx.budget.mark_done(slot.study_key, job.job_id)
        return TrialOutcome("budget_full", job.study_name, progress=slot.progress(study))

    # The claim is kept alive from here to its release: a slow step (a storage lock a dead
    # process left behind, an MLflow retry) never lets it lapse while this worker lives.
    beat = Heartbeat(slot.heartbeat, interval_s=slot.lease_s / 3, name=job.job_id)
    with beat:
        deliveries = record_delivery(ctx, job.job_id)
        if deliveries > max_deliveries():
            reason = f"gave up after {deliveries - 1} deliveries that never finished"
            record_gave_up(ctx, job.job_id, reason)
            beat.stop()
            ctx.budget.release(slot.study_key, job.job_id, counted=False)
            log.error("job %s: %s", job.job_id, reason)
            progress = slot.progress(study)
            return TrialOutcome("gave_up", job.study_name, error=reason, progress=progress)
        if not slot.heartbeat():  # taken by the reaper already: it sent the replacement
            beat.stop()
            return TrialOutcome("lost", job.study_name, error=LOST_CLAIM)
        try:
            # The sampler seeds each trial from (seed, variant, trial number): see trial_seeds.
            study.pruner = _StopWhenLost(study.pruner, beat.lost)
            trial = study.ask()
        except BaseException:
            beat.stop()
            ctx.budget.abandon(slot.study_key, job.job_id)  # no trial: a retry may claim again
            raise
        outcome = _run_trial(slot, study, trial, beat)
    finish_delivery(ctx, job.job_id)
    return outcome


def _run_trial(slot: _Slot, study: Any, trial: Any, beat: Heartbeat) -> TrialOutcome:
    """The trial exists: every way out tells it, records it and releases the claim."""
    from optuna.trial import TrialState

    job, ctx = slot.job, slot.ctx
    hpo = job.experiment.hpo
    layout: OutputLayout = ctx.runtime.layout
    error_tag = job.experiment.tags.benchmark.error
    counted, lost, replacement = False, False, None
    run_id: str | None = None
    try:
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
            opened = ctx.in_experiment(
                experiment_name,
                lambda experiment_id: start_trial_run(
                    ctx.mlflow, experiment_id, started, started.mlflow_tags(job.experiment.tags)
                ),
            )
            trial.set_user_attr(RUN_ID_ATTR, opened)  # the reaper fails the run by this
            return opened

        # The run is opened while the objective already works: MLflow's round trips (a
        # create_run is ~10 ms on SQLite, more on a tracking server) stay off the GPU.
        opening = InBackground(open_run, name=f"{job.job_id}-open-run")
        metrics = TrialMetrics()  # what the objective records, logged with the run at the end
        value, state, error = _run_objective(job, ctx, trial, slot.ref, layout, metrics)
        try:
            run_id = opening.result()
        except Exception as exc:
            state, error = TrialState.FAIL, f"MLflow run not opened: {_describe(exc)}"
        if state is TrialState.COMPLETE and not beat.lost.is_set():
            assert run_id is not None
            # MLflow before Optuna: an MLflow outage past the retries fails the trial
            # instead of leaving a COMPLETE trial whose run never finished.
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
                finish_trial_run(
                    ctx.mlflow, run_id, result, {"hpoq.worker": ctx.hostname}, metrics.points
                )
            except Exception as exc:
                state, error = (
                    TrialState.FAIL,
                    f"MLflow did not take the result: {_describe(exc)}",
                )
        # The claim must still be ours when Optuna is told: the reaper only takes a
        # lapsed claim, and this renews it for a whole lease.
        lost = beat.lost.is_set() or not slot.heartbeat()
        if lost:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            log.error("trial %d of %s: %s", trial.number, job.study_name, LOST_CLAIM)
            _fail_run_quietly(ctx, run_id, LOST_CLAIM, error_tag)
            return TrialOutcome(
                "lost", job.study_name, trial.number, run_id=run_id, error=LOST_CLAIM,
                progress=slot.progress(study),
            )  # fmt: skip
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
        if final_state == "FAIL":
            _fail_run_quietly(ctx, run_id, error or "trial failed", error_tag)
        elif state is TrialState.PRUNED and run_id is not None:
            try:
                finish_trial_run(
                    ctx.mlflow, run_id, record, {"hpoq.worker": ctx.hostname}, metrics.points
                )
            except Exception as exc:  # the trial counts in Optuna either way
                log.warning("pruned trial %d: MLflow run not finished: %s", trial.number, exc)
        counted = final_state in ("COMPLETE", "PRUNED")
        write_metrics_file(layout.trial_dir(job.backbone, job.study_name, trial.number), record)
        if not counted:
            replacement = _replacement(job, study)
        status = _STATUS_BY_STATE.get(final_state, "failed")
        outcome = TrialOutcome(
            status,
            job.study_name,
            trial.number,
            record.value,
            run_id,
            error=None if counted else error,
        )
    except BaseException:
        if not lost:  # the job broke down: the trial counts if Optuna holds it finished
            state_name = _tell_fail_quietly(study, trial)
            counted = state_name in ("COMPLETE", "PRUNED")
            if not counted:
                _fail_run_quietly(ctx, run_id, "the job failed while it ran the trial", error_tag)
                replacement = replacement_job_id(job.job_id)
        raise
    finally:
        beat.stop()  # no beat after the release (it would find the job done)
        if not lost:
            released = ctx.budget.release(slot.study_key, job.job_id, counted, replacement)
            if not released:
                replacement = None
    return _with(outcome, replacement=replacement, progress=slot.progress(study))


class _StopWhenLost(BasePruner):
    """The study's pruner, which also says "stop" once the claim is lost: an objective that
    asks `trial.should_prune()` (the built-in trainer does, every epoch) stops early
    instead of training on for a result that would not be published."""

    def __init__(self, pruner: BasePruner, lost: threading.Event) -> None:
        self._pruner = pruner
        self._lost = lost

    def prune(self, study: Any, trial: Any) -> bool:
        return self._lost.is_set() or bool(self._pruner.prune(study, trial))


def _with(outcome: TrialOutcome, **changes: Any) -> TrialOutcome:
    from dataclasses import replace

    return replace(outcome, **changes)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _replacement(job: TrialJob, study: Any) -> str | None:
    """The id of the job that replaces this failed trial, while the variant replaces
    failures (its FAIL trials, this one included, within `max_failed_trials`)."""
    from optuna.trial import TrialState

    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    if failed <= job.experiment.hpo.failure_bound:
        return replacement_job_id(job.job_id)
    log.warning(
        "%s: %d failed trials, max_failed_trials is %d: not replaced",
        job.study_name,
        failed,
        job.experiment.hpo.failure_bound,
    )
    return None


def _tell_fail_quietly(study: Any, trial: Any) -> str | None:
    """FAIL the trial unless it finished already; its final state, None if Optuna could not
    be told (the reaper fails it later: its job is done, its trial RUNNING)."""
    from optuna.trial import TrialState

    try:
        frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    except Exception as exc:
        log.warning("trial %d not told FAIL: %s", trial.number, exc)
        return None
    return str(frozen.state.name)


def _fail_run_quietly(ctx: WorkerContext, run_id: str | None, reason: str, error_tag: str) -> None:
    """Best effort: a run whose trial failed is FAILED, not left RUNNING."""
    if run_id is None:
        return
    try:
        fail_run(ctx.mlflow, run_id, reason, error_tag)
    except Exception as exc:
        log.warning("could not mark MLflow run %s FAILED: %s", run_id, exc)


def _run_objective(
    job: TrialJob,
    ctx: WorkerContext,
    trial: Any,
    ref: VariantRef,
    layout: OutputLayout,
    metrics: TrialMetrics,
) -> tuple[float | None, Any, str | None]:
    """Run the objective. Returns (value, TrialState, error text)."""
    import optuna
    from optuna.trial import TrialState

    objective = load_objective(job.experiment.hpo.objective.function)

    def before_retry() -> None:  # the epochs of the attempt that ran out of memory go
        metrics.points.clear()
        metrics.log({"out_of_memory_retries": 1.0})

    try:
        # The data and a published model are fetched into this host's cache once; a
        # download that fails or does not match its hash fails the trial, with why.
        store = ctx.content()
        data, data_dir = local_data(job.experiment, store)
        backbone = local_backbone(job.experiment, ref.backbone, store)
        context = TrialContext(
            hpo=job.experiment.hpo,
            study_name=ref.study_name,
            variant=ref.variant,
            study_dir=layout.study_dir(ref.backbone, ref.study_name),
            trial_dir=layout.trial_dir(ref.backbone, ref.study_name, trial.number),
            data_dir=data_dir,
            device=None,
            metrics=metrics,
        )
        # A shared turn on the device; benchmarks and trials retried alone wait for it.
        value = float(
            run_sharing_device(
                ctx.device_turns,
                turn_owner(job.job_id),
                lambda: objective(trial, backbone, data, context),
                what=f"trial {trial.number} of {ref.study_name}",
                retry_alone=job.experiment.hpo.out_of_memory == "retry_alone" and ctx.slots > 1,
                before_retry=before_retry,
            )
        )
    except optuna.TrialPruned:
        return None, TrialState.PRUNED, None
    except Exception as exc:
        log.exception("objective failed in trial %d of %s", trial.number, ref.study_name)
        return None, TrialState.FAIL, _describe(exc)
    if value != value or value in (float("inf"), float("-inf")):
        return None, TrialState.FAIL, f"objective returned {value}"
    return value, TrialState.COMPLETE, None


def _last_intermediate(trial: Any) -> float | None:
    values = trial.intermediate_values
    return float(values[max(values)]) if values else None


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
                upload_checkpoint(ctx.content(), run_id, checkpoint)
    except Exception as exc:
        log.warning("checkpoint of trial %d not uploaded to MLflow: %s", number, exc)
