"""Where a variant stands: one definition for status, run, workers and the reaper."""

from __future__ import annotations

from pathlib import Path

import optuna

from hpoq.core.coordination.budget import BudgetStatus
from hpoq.core.variant_state import VariantState, variant_progress
from tests.factories import make_experiment

IDLE = BudgetStatus(finished=0, running=0, lapsed=0, pending=0)


def _trials(*states: optuna.trial.TrialState) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study()
    for state in states:
        trial = study.ask()
        if state is not optuna.trial.TrialState.RUNNING:
            study.tell(trial, 1.0 if state.name == "COMPLETE" else None, state=state)
    return study.get_trials()


def test_states(tmp_path: Path) -> None:
    S = optuna.trial.TrialState
    hpo = make_experiment(tmp_path, n_trials=2, hpo_extra={"max_failed_trials": 1}).hpo
    assert variant_progress(_trials(S.COMPLETE, S.PRUNED), hpo, IDLE).state is VariantState.COMPLETE
    assert variant_progress(_trials(S.COMPLETE, S.RUNNING), hpo, IDLE).state is VariantState.RUNNING
    queued = BudgetStatus(finished=1, running=0, lapsed=0, pending=1)
    assert variant_progress(_trials(S.COMPLETE), hpo, queued).state is VariantState.RUNNING
    lapsed = BudgetStatus(finished=1, running=0, lapsed=1, pending=0)
    assert variant_progress(_trials(S.COMPLETE), hpo, lapsed).state is VariantState.RUNNING
    stopped = variant_progress(_trials(S.COMPLETE, S.FAIL, S.FAIL), hpo, IDLE)
    assert stopped.state is VariantState.FINISHED_WITH_FAILURES and stopped.over
    assert "2 trials failed" in stopped.reason and "max_failed_trials (1)" in stopped.reason
    short = variant_progress(_trials(S.COMPLETE, S.FAIL), hpo, IDLE)
    assert short.state is VariantState.INCOMPLETE and "nothing queued or running" in short.reason


def test_max_failed_trials_defaults_to_n_trials(tmp_path: Path) -> None:
    assert make_experiment(tmp_path, n_trials=7).hpo.failure_bound == 7
