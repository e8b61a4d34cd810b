"""Warm start (`warm_start: previous_best`): a new variant's first trial re-runs the best
parameters of the latest complete variant before it.

The parameters go in with Optuna's `study.enqueue_trial` as a WAITING trial, before any
trial job of the new variant is enqueued. A worker claims its budget slot first and
then asks; `Study.ask()` pops a WAITING trial before it creates a new one, so the first
job to ask runs these parameters as one of the variant's `n_trials` (the budget counts
it like any other trial), and a WAITING trial counts nowhere until then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpoq.config.hpo import CategoricalParam, HpoConfig, IntParam, SearchParam
from hpoq.core.studies import StudyStore
from hpoq.core.variants import VariantRef

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

WARM_START_ATTR = "hpoq.warm_start_from"  # user attribute of the enqueued trial


@dataclass(frozen=True)
class WarmStart:
    source: VariantRef
    trial_number: int
    value: float
    params: dict[str, Any]


def enqueue_previous_best(
    store: StudyStore, hpo: HpoConfig, study: optuna.Study, new: VariantRef, base: str
) -> WarmStart | None:
    """Enqueue the best parameters of the latest complete variant below `new` as `study`'s
    first trial. Nothing when the study already has trials (it is not new) or no earlier
    variant is complete. Parameters no longer in the search space, or outside their
    current range, are left for the sampler to choose."""
    if study.get_trials(deepcopy=False):
        return None
    earlier = [r for r in store.list_variants(new.backbone, base) if r.variant < new.variant]
    found = _latest_complete_best(store, hpo, earlier)
    if found is None:
        return None
    params = {
        name: value
        for name, value in found.params.items()
        if name in hpo.search_space and fits(hpo.search_space[name], value)
    }
    study.enqueue_trial(
        params,
        user_attrs={WARM_START_ATTR: f"{found.source.study_name}#{found.trial_number}"},
    )
    log.info(
        "warm start of %s: trial %d of %s (%s)",
        new.study_name,
        found.trial_number,
        found.source.study_name,
        params,
    )
    return WarmStart(found.source, found.trial_number, found.value, params)


def _latest_complete_best(
    store: StudyStore, hpo: HpoConfig, refs: Sequence[VariantRef]
) -> WarmStart | None:
    from hpoq.core.optuna_setup import N_TRIALS_ATTR, count_finished

    for ref in sorted(refs, key=lambda r: r.variant, reverse=True):
        study = store.load(ref)
        if study is None:
            continue
        n_trials = int(study.user_attrs.get(N_TRIALS_ATTR, hpo.n_trials))
        if count_finished(study) < n_trials:
            continue
        best = best_complete_trial(study)
        if best is not None:
            return WarmStart(ref, best.number, float(best.value or 0.0), dict(best.params))
    return None


def best_complete_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The better value wins; among equal values the lower trial number (the project's
    tie-break rule)."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not trials:
        return None
    sign = -1.0 if study.direction is StudyDirection.MAXIMIZE else 1.0
    return min(trials, key=lambda t: (sign * float(t.value or 0.0), t.number))


def fits(spec: SearchParam, value: Any) -> bool:
    """Whether `value` can be suggested for `spec` as the search space stands now."""
    if isinstance(spec, CategoricalParam):
        return value in spec.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(spec, IntParam) and not float(value).is_integer():
        return False
    return bool(spec.low <= value <= spec.high)
