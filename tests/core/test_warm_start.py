"""Which trial warm-starts a new variant, and which of its parameters still fit."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpoq.config.hpo import HpoConfig
from hpoq.core.optuna_setup import create_variant_study
from hpoq.core.paths import OutputLayout
from hpoq.core.studies import StudyStore
from hpoq.core.variants import VariantRef
from hpoq.core.warm_start import WARM_START_ATTR, enqueue_previous_best, fits

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [8, 16]},
    "epochs": {"type": "int", "low": 1, "high": 3},
}


def hpo(**extra: object) -> HpoConfig:
    return HpoConfig.model_validate(
        {
            "backbones": [{"name": "tiny", "architecture": {}}],
            "n_trials": 2,
            "search_space": SPACE,
            "warm_start": "previous_best",
            **extra,
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> StudyStore:
    layout = OutputLayout(tmp_path, "local")
    return StudyStore(layout, hpo().checkpoint)


def variant(store: StudyStore, config: HpoConfig, number: int, values: list[float]) -> VariantRef:
    name = "hpo_tiny" if number == 1 else f"hpo_tiny_v{number}"
    ref = VariantRef("tiny", number, name)
    study = create_variant_study(store, ref, config)
    for index, value in enumerate(values):
        study.enqueue_trial({"learning_rate": 1e-3 * (index + 1), "batch_size": 8, "epochs": 2})
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        trial.suggest_categorical("batch_size", [8, 16])
        trial.suggest_int("epochs", 1, 3)
        study.tell(trial, value)
    return ref


def waiting(store: StudyStore, ref: VariantRef) -> list[optuna.trial.FrozenTrial]:
    study = store.load(ref)
    assert study is not None
    return study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_the_best_of_the_latest_complete_variant_ties_to_the_lower_trial(
    store: StudyStore,
) -> None:
    config = hpo()
    variant(store, config, 1, [0.9, 0.1])
    variant(store, config, 2, [0.5, 0.5])  # complete; a tie: trial 0 wins
    variant(store, config, 3, [0.99])  # incomplete (1 of 2): skipped
    new = VariantRef("tiny", 4, "hpo_tiny_v4")
    study = create_variant_study(store, new, config)
    warm = enqueue_previous_best(store, config, study, new, "hpo_tiny")
    assert warm is not None and (warm.source.variant, warm.trial_number) == (2, 0)
    [queued] = waiting(store, new)
    assert queued.user_attrs[WARM_START_ATTR] == "hpo_tiny_v2#0"
    assert queued.system_attrs["fixed_params"] == warm.params
    assert warm.params == {"learning_rate": 1e-3, "batch_size": 8, "epochs": 2}


def test_nothing_is_enqueued_without_a_complete_variant_or_into_a_used_study(
    store: StudyStore,
) -> None:
    config = hpo()
    variant(store, config, 1, [0.3])  # incomplete
    new = VariantRef("tiny", 2, "hpo_tiny_v2")
    study = create_variant_study(store, new, config)
    assert enqueue_previous_best(store, config, study, new, "hpo_tiny") is None
    variant(store, config, 3, [0.1, 0.2])
    assert enqueue_previous_best(store, config, study, new, "hpo_tiny") is None  # below only
    used = variant(store, config, 4, [0.5])
    study = store.load(used)
    assert study is not None
    assert enqueue_previous_best(store, config, study, used, "hpo_tiny") is None
    assert waiting(store, new) == [] and waiting(store, used) == []


def test_parameters_outside_the_current_space_are_left_to_the_sampler(
    store: StudyStore,
) -> None:
    variant(store, hpo(), 1, [0.1, 0.9])  # best: learning_rate 2e-3, batch 8, epochs 2
    narrower = hpo(
        search_space={
            "learning_rate": {"type": "float", "low": 5e-3, "high": 1e-2},
            "batch_size": {"type": "categorical", "choices": [8, 32]},
            "dropout": {"type": "float", "low": 0.0, "high": 0.2},
        }
    )
    new = VariantRef("tiny", 2, "hpo_tiny_v2")
    study = create_variant_study(store, new, narrower)
    warm = enqueue_previous_best(store, narrower, study, new, "hpo_tiny")
    assert warm is not None and warm.params == {"batch_size": 8}


def test_fits() -> None:
    space = hpo().search_space
    assert fits(space["learning_rate"], 1e-4) and fits(space["learning_rate"], 1e-2)
    assert not fits(space["learning_rate"], 2e-2)
    assert fits(space["epochs"], 3) and not fits(space["epochs"], 2.5)
    assert not fits(space["epochs"], True) and not fits(space["epochs"], "2")
    assert fits(space["batch_size"], 16) and not fits(space["batch_size"], 32)
