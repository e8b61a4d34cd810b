"""Reaping trials whose worker died: RUNNING in Optuna, but nobody holds their claim.

A reaped trial becomes FAIL (so it frees its budget slot) and its MLflow run FAILED; a
trial whose worker died before opening its run gets a FAILED run logged for it. Its job
is retired; the first reaper to retire it returns the job id so that a replacement job
can be enqueued. A RUNNING trial without a job id (written by hand or by an older
process) is reaped only after `grace_s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpoq.core.coordination.budget import TrialBudget
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

LOST_REASON = "worker lost: lease lapsed"


@dataclass(frozen=True)
class Reaped:
    trial_number: int
    job_id: str | None
    retired_first: bool  # this call retired the job: it owes a replacement


def reap_stale_trials(
    study: optuna.Study,
    study_key: str,
    budget: TrialBudget,
    *,
    grace_s: float,
    min_age_s: float,
    mlflow: MlflowClient | None = None,
    error_tag: str = "hpoq.error",
    record_lost: Callable[[FrozenTrial, str], None] | None = None,
) -> list[Reaped]:
    """Reap the stale RUNNING trials of `study`. `record_lost(trial, reason)` logs a FAILED
    MLflow run for a reaped trial that has none (its worker died before opening it)."""
    from optuna.trial import TrialState

    reaped: list[Reaped] = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        age = now - started
        job_id = trial.user_attrs.get(JOB_ID_ATTR)
        if job_id is None:
            stale = age > grace_s
        else:
            # min_age covers the instant between ask() and recording the job id.
            stale = age > min_age_s and not budget.claim_is_live(study_key, str(job_id))
        if not stale:
            continue
        frozen = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        if frozen.state != TrialState.FAIL:
            continue  # it finished while we looked
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        try:
            if mlflow is not None and run_id:
                from hpoq.core.trial_tracking import fail_run

                fail_run(mlflow, str(run_id), LOST_REASON, error_tag)
            elif record_lost is not None and not run_id:
                record_lost(frozen, LOST_REASON)
        except Exception as exc:  # the trial is reaped either way
            log.warning("could not record lost trial %d in MLflow: %s", trial.number, exc)
        first = budget.mark_done(study_key, str(job_id)) if job_id else False
        log.warning("reaped trial %d of %s (job %s)", trial.number, study.study_name, job_id)
        reaped.append(Reaped(trial.number, str(job_id) if job_id else None, first))
    return reaped
