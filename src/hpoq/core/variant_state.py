"""Where a variant stands, from Optuna's trials and Redis's budget: the one definition that
`hpoq status`, `hpoq run`, the workers and the reaper share.

- complete: COMPLETE plus PRUNED trials reached n_trials;
- running: a trial is RUNNING, or a job of the variant is queued or holds a claim;
- finished with failures: nothing left to run, and more trials failed than the variant
  replaces (`max_failed_trials`): the last failures were not replaced;
- incomplete: nothing left to run and short of n_trials for another reason (jobs given up
  after too many deliveries, jobs lost with Redis's data): `hpoq submit --variant N` tops
  it up.

A variant that is not running has finished, however it finished: its best completed trial
is benchmarked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hpoq.core.coordination.budget import BudgetStatus

if TYPE_CHECKING:
    from hpoq.config.hpo import HpoConfig


class VariantState(StrEnum):
    COMPLETE = "complete"
    RUNNING = "running"
    FINISHED_WITH_FAILURES = "finished with failures"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class VariantProgress:
    state: VariantState
    finished: int  # COMPLETE + PRUNED
    pruned: int
    running: int  # RUNNING trials in Optuna
    failed: int
    n_trials: int
    max_failed_trials: int
    reason: str  # why it stopped short of n_trials ('' otherwise)

    @property
    def over(self) -> bool:
        """Nothing more will run: its benchmark may fire."""
        return self.state is not VariantState.RUNNING

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "finished": self.finished,
            "pruned": self.pruned,
            "running": self.running,
            "failed": self.failed,
            "n_trials": self.n_trials,
            "max_failed_trials": self.max_failed_trials,
            "reason": self.reason,
        }


def variant_progress(
    trials: list[Any], hpo: HpoConfig, budget: BudgetStatus | None
) -> VariantProgress:
    """`trials`: the variant's FrozenTrials; `budget`: its status in Redis (None when Redis
    is not consulted: then only Optuna tells whether something runs)."""
    from optuna.trial import TrialState

    count = {state: 0 for state in TrialState}
    for trial in trials:
        count[trial.state] += 1
    finished = count[TrialState.COMPLETE] + count[TrialState.PRUNED]
    failed = count[TrialState.FAIL]
    running = count[TrialState.RUNNING]
    bound = hpo.failure_bound
    reason = ""
    if finished >= hpo.n_trials:
        state = VariantState.COMPLETE
    elif running or (budget is not None and budget.active):
        state = VariantState.RUNNING
    elif failed > bound:
        state = VariantState.FINISHED_WITH_FAILURES
        reason = (
            f"stopped at {finished} of {hpo.n_trials} trials: {failed} trials failed, more "
            f"than max_failed_trials ({bound}) allows to replace"
        )
    else:
        state = VariantState.INCOMPLETE
        reason = (
            f"stopped at {finished} of {hpo.n_trials} trials with nothing queued or running "
            "(jobs given up or lost)"
        )
    return VariantProgress(
        state=state,
        finished=finished,
        pruned=count[TrialState.PRUNED],
        running=running,
        failed=failed,
        n_trials=hpo.n_trials,
        max_failed_trials=bound,
        reason=reason,
    )
