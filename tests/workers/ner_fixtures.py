"""Builders shared by the trainer, checkpoint and benchmark tests: tiny data, tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from hpoq.config.data import DataConfig
from hpoq.config.hpo import BackboneConfig, HpoConfig
from hpoq.core.objective import TrialContext

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
TINY = BackboneConfig.model_validate(
    {
        "name": "tiny",
        "architecture": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        },
    }
)


def synthetic_data(
    data_dir: Path, train: int = 200, validation: int = 60, test: int = 30
) -> DataConfig:
    return DataConfig.model_validate(
        {
            "name": "synthetic-ner",
            "version": "1",
            "format": "conll",
            "splits": {
                "train": "train.conll",
                "validation": "validation.conll",
                "test": "test.conll",
            },
            "labels": LABELS,
            "synthetic": {
                "seed": 13,
                "train_sentences": train,
                "validation_sentences": validation,
                "test_sentences": test,
            },
            "local_path": str(data_dir),
        }
    )


def hpo_config(
    backbone: BackboneConfig = TINY,
    search_space: dict[str, Any] | None = None,
    **extra: Any,
) -> HpoConfig:
    space = search_space or {
        "learning_rate": {"type": "float", "low": 4e-3, "high": 6e-3, "log": True},
        "batch_size": {"type": "categorical", "choices": [16]},
        "epochs": {"type": "int", "low": 2, "high": 3},
        "dropout": {"type": "float", "low": 0.0, "high": 0.1},
    }
    return HpoConfig.model_validate(
        {
            "backbones": [backbone.model_dump(mode="json", exclude_none=True)],
            "n_trials": 4,
            "search_space": space,
            "sampler": {"type": "random", "seed": 3},
            "trainer": {"precision": "fp32", "max_seq_length": 48, "device": "cpu"},
            **extra,
        }
    )


def trial_context(hpo: HpoConfig, root: Path, data_dir: Path, trial_number: int) -> TrialContext:
    study_dir = root / "hpo_tiny"
    return TrialContext(
        hpo=hpo,
        study_name="hpo_tiny",
        variant=1,
        study_dir=study_dir,
        trial_dir=study_dir / f"trial_{trial_number}",
        data_dir=data_dir,
        device="cpu",
    )


def new_study(hpo: HpoConfig, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=hpo.sampler.seed),
        pruner=pruner or optuna.pruners.NopPruner(),
    )


class AlwaysPrune(optuna.pruners.BasePruner):
    """Prunes at the first reported step."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True
