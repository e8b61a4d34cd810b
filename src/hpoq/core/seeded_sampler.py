"""A sampler that draws every trial from the trial's own seed (`hpoq.core.trial_seeds`).

Optuna numbers a trial inside `Study.ask()` (the storage assigns the number when it
creates the trial, or the trial popped from the WAITING queue keeps its own) and then
calls `sampler.before_trial(study, trial)` with it, in `optuna.Trial.__init__`; values are
drawn later, at the first `suggest_*`. So `PerTrialSeedSampler` builds the real sampler
of a trial in `before_trial`, seeded from that trial's number, and routes every later
call for the trial to it. Samplers are kept per trial number: several trials asked on
one study object before any is told each keep their own. Only `BaseSampler`'s public
interface is used, the way Optuna's own `PartialFixedSampler` wraps a base sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpoq.core.trial_seeds import trial_seed


class PerTrialSeedSampler(BaseSampler):
    """Delegates each trial to `make(seed)` built with that trial's seed.

    `reseed_rng` (which `Study.optimize` calls in each of its threads) does nothing: every
    trial already has a seed of its own."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int, variant: int) -> None:
        self._make = make
        self._seed = seed
        self._variant = variant
        self._by_trial: dict[int, BaseSampler] = {}

    def __str__(self) -> str:
        return f"PerTrialSeedSampler(seed={self._seed}, variant={self._variant})"

    def seed_for(self, trial_number: int) -> int:
        return trial_seed(self._seed, self._variant, trial_number)

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        sampler = self._by_trial.get(trial.number)
        if sampler is None:
            sampler = self._by_trial[trial.number] = self._make(self.seed_for(trial.number))
        return sampler

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._by_trial.pop(trial.number, None)  # a fresh state, whatever came before
        self._sampler(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._by_trial.pop(trial.number, None)
        if sampler is None:  # told through another study object than the one that asked
            sampler = self._make(self.seed_for(trial.number))
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        pass
