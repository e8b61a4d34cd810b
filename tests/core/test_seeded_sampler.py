"""Per-trial sampler seeds: concurrent asks differ, variants differ, reruns repeat.

Each study object below stands for one worker: it is opened on the shared storage with
the sampler `open_variant_study` builds, as a trial job does."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from hpoq.config.hpo import SamplerConfig
from hpoq.core.optuna_setup import build_sampler
from hpoq.core.seeded_sampler import PerTrialSeedSampler
from hpoq.core.trial_seeds import SAMPLER, TRAINING, trial_seed

optuna.logging.set_verbosity(optuna.logging.WARNING)
KINDS = ["tpe", "random"]


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 5e-4, 5e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "epochs": trial.suggest_int("epochs", 2, 3),
        "dropout": trial.suggest_float("dropout", 0.0, 0.2),
    }


def value(params: dict[str, Any]) -> float:
    return float(params["learning_rate"] * 100 + params["dropout"] + params["epochs"])


def worker(
    storage: optuna.storages.BaseStorage, name: str, kind: str, variant: int
) -> optuna.Study:
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=build_sampler(SamplerConfig(type=kind, seed=42), variant),
    )


def new_storage(*names: str) -> optuna.storages.InMemoryStorage:
    storage = optuna.storages.InMemoryStorage()
    for name in names:
        optuna.create_study(study_name=name, storage=storage, direction="minimize")
    return storage


def run_sequentially(
    storage: optuna.storages.BaseStorage, name: str, kind: str, variant: int, n: int
) -> list[dict[str, Any]]:
    points = []
    for _ in range(n):
        study = worker(storage, name, kind, variant)
        trial = study.ask()
        params = suggest(trial)
        study.tell(trial, value(params))
        points.append(params)
    return points


@pytest.mark.parametrize("kind", KINDS)
def test_workers_that_read_the_same_history_propose_different_points(kind: str) -> None:
    # Four workers open the study before any of them asks (the start of a sweep): with a
    # seed taken from the history length they all drew the same point.
    storage = new_storage("hpo_b")
    workers = [worker(storage, "hpo_b", kind, variant=1) for _ in range(4)]
    trials = [w.ask() for w in workers]
    points = [suggest(t) for t in reversed(trials)]  # sampled in any order
    assert len({tuple(sorted(p.items())) for p in points}) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_variant_shares_no_point_with_the_previous_one(kind: str) -> None:
    storage = new_storage("hpo_b", "hpo_b_v2")
    first = run_sequentially(storage, "hpo_b", kind, 1, 12)
    second = run_sequentially(storage, "hpo_b_v2", kind, 2, 12)
    assert not {tuple(sorted(p.items())) for p in first} & {
        tuple(sorted(p.items())) for p in second
    }
    assert {p["learning_rate"] for p in first}.isdisjoint(p["learning_rate"] for p in second)


@pytest.mark.parametrize("kind", KINDS)
def test_a_rerun_of_a_variant_repeats_its_points(kind: str) -> None:
    # 12 trials: past TPE's 10 random start-up trials, so the model-based ones repeat too.
    once = run_sequentially(new_storage("hpo_b_v3"), "hpo_b_v3", kind, 3, 12)
    again = run_sequentially(new_storage("hpo_b_v3"), "hpo_b_v3", kind, 3, 12)
    assert once == again


def test_trials_in_flight_on_one_study_object_keep_their_own_seed() -> None:
    # Asked together and sampled in reverse order, each trial still draws what a fresh
    # random sampler seeded with its own seed draws: the seed follows the trial number.
    storage = new_storage("hpo_b")
    study = worker(storage, "hpo_b", "random", variant=5)
    trials = [study.ask() for _ in range(3)]
    drawn = {t.number: suggest(t) for t in reversed(trials)}
    for number, params in drawn.items():
        alone = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=trial_seed(42, 5, number))
        )
        assert suggest(alone.ask()) == params


def test_an_enqueued_trial_keeps_its_parameters_and_the_next_ask_samples() -> None:
    storage = new_storage("hpo_b")
    study = worker(storage, "hpo_b", "tpe", variant=1)
    fixed = {"learning_rate": 1e-3, "batch_size": 32, "epochs": 3, "dropout": 0.05}
    study.enqueue_trial(fixed)
    first, second = study.ask(), study.ask()
    assert suggest(first) == fixed
    assert suggest(second) != fixed


def test_trial_seed_is_a_fixed_function_of_its_inputs() -> None:
    # Pinned: a change of derivation would silently change every rerun's points.
    # sha256(b'{"purpose":"sampler","seed":42,"trial":0,"variant":1}')[:4], big-endian
    assert trial_seed(42, 1, 0) == trial_seed(42, 1, 0, SAMPLER) == 2234668150
    seeds = {
        trial_seed(42, 1, 0),
        trial_seed(43, 1, 0),
        trial_seed(42, 2, 0),
        trial_seed(42, 1, 1),
        trial_seed(42, 1, 0, TRAINING),
    }
    assert len(seeds) == 5
    assert all(0 <= s < 2**32 for s in seeds)


def test_without_a_seed_the_plain_sampler_is_used() -> None:
    sampler = build_sampler(SamplerConfig(type="tpe", seed=None), 1)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert isinstance(build_sampler(SamplerConfig(type="random", seed=1), 1), PerTrialSeedSampler)
