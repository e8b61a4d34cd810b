"""The built-in trainer and objective on a tiny BERT and the synthetic dataset (CPU)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import optuna
import pytest

from hpoq.config.data import DataConfig
from hpoq.config.hpo import BackboneConfig, TrainerConfig
from hpoq.core.datasets import ensure_dataset
from hpoq.errors import InputError
from hpoq.workers.objectives.token_classification import objective, training_seed
from hpoq.workers.training.checkpoints import read_best_pointer
from hpoq.workers.training.device import seed_everything
from hpoq.workers.training.hyperparams import HyperParams
from hpoq.workers.training.trainer import evaluate, fit, prepare, train_token_classifier
from tests.workers.ner_fixtures import (
    TINY,
    AlwaysPrune,
    hpo_config,
    new_study,
    synthetic_data,
    trial_context,
)

TRAINER = TrainerConfig(max_seq_length=48, device="cpu")
PARAMS = HyperParams(learning_rate=5e-3, batch_size=16, epochs=3, warmup_ratio=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path]:
    data_dir = tmp_path_factory.mktemp("data") / "ner"
    config = synthetic_data(data_dir)
    ensure_dataset(config, data_dir)
    return config, data_dir


def test_training_beats_the_untrained_model(data: tuple[DataConfig, Path]) -> None:
    config, data_dir = data
    seed_everything(0)
    run = prepare(TINY, config, data_dir, TRAINER, PARAMS, "cpu")
    untrained = evaluate(run).macro_f1
    history = fit(run, PARAMS, "fp32", seed=0)
    trained = run.final_scores.macro_f1
    print(f"macro-F1 untrained {untrained:.4f} -> trained {trained:.4f}")
    assert [r.epoch for r in history] == [1, 2, 3]
    assert untrained < 0.2
    assert trained > 0.6
    assert trained > untrained + 0.4
    assert history[-1].train_loss < history[0].train_loss


def test_same_seed_same_metric(data: tuple[DataConfig, Path]) -> None:
    config, data_dir = data
    params = HyperParams(learning_rate=3e-3, batch_size=16, epochs=2, dropout=0.1)
    first = train_token_classifier(TINY, config, data_dir, TRAINER, params, seed=11)
    second = train_token_classifier(TINY, config, data_dir, TRAINER, params, seed=11)
    other = train_token_classifier(TINY, config, data_dir, TRAINER, params, seed=12)
    assert first.final_scores == second.final_scores
    assert [r.train_loss for r in first.history] == [r.train_loss for r in second.history]
    # The seed matters: another seed starts from other weights and another batch order.
    assert [r.train_loss for r in first.history] != [r.train_loss for r in other.history]


def test_bf16_autocast_trains(data: tuple[DataConfig, Path]) -> None:
    config, data_dir = data
    trainer = TrainerConfig(max_seq_length=48, device="cpu", precision="bf16")
    params = HyperParams(learning_rate=5e-3, batch_size=32, epochs=1)
    run = train_token_classifier(TINY, config, data_dir, trainer, params, seed=0)
    assert 0.0 <= run.final_scores.macro_f1 <= 1.0
    assert math.isfinite(run.history[0].train_loss)


def test_distilbert_architecture_trains(data: tuple[DataConfig, Path]) -> None:
    assert TINY.architecture is not None
    architecture = TINY.architecture.model_copy(update={"model_type": "distilbert"})
    backbone = BackboneConfig(name="tiny-distil", architecture=architecture)
    config, data_dir = data
    run = train_token_classifier(backbone, config, data_dir, TRAINER, PARAMS, seed=0)
    assert run.model.config.model_type == "distilbert"
    assert run.final_scores.macro_f1 > 0.5


def test_objective_returns_the_configured_metric_and_logs_every_score(
    data: tuple[DataConfig, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, data_dir = data
    hpo = hpo_config(objective={"metric": "micro-f1"})
    study = new_study(hpo)
    trial = study.ask()
    context = trial_context(hpo, tmp_path, data_dir, trial.number)
    with caplog.at_level(logging.INFO, logger="hpoq.workers.objectives.token_classification"):
        value = objective(trial, TINY, config, context)
    study.tell(trial, value)
    epochs = trial.params["epochs"]
    assert 0.5 < value <= 1.0
    assert set(study.trials[0].params) == set(hpo.search_space)
    summary = json.loads((context.trial_dir / "training.json").read_text(encoding="utf-8"))
    # The value is micro-F1, not macro: what `objective.metric` names.
    assert value == summary["scores"]["micro-f1"] == summary["epochs"][-1]["micro-f1"]
    assert summary["scores"]["macro-f1"] != value
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == list(range(1, epochs + 1))
    assert [reported[e["epoch"]] for e in summary["epochs"]] == [
        e["micro-f1"] for e in summary["epochs"]
    ]
    # One worker-log line per epoch: trial, epoch, train loss, metric, seconds.
    lines = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert len(lines) == epochs
    assert lines[0].startswith(f"trial {trial.number} of hpo_tiny, epoch 1/{epochs}: train loss ")
    assert "micro-f1 " in lines[0] and lines[0].endswith(" s")
    # What goes to MLflow: every score once, per-type F1, and each epoch's scores at its step.
    final = {p.key: p.value for p in context.metrics.points if p.step == 0}
    assert {"micro-f1", "macro-f1", "precision", "recall"} <= set(final)
    assert {"f1.PER", "f1.LOC", "f1.ORG", "f1.DATE"} <= set(final)
    assert final["micro-f1"] == value
    per_epoch = {(p.key, p.step) for p in context.metrics.points if p.step > 0}
    for name in ("micro-f1", "macro-f1", "precision", "recall", "train_loss", "seconds"):
        assert {(f"epoch/{name}", e) for e in range(1, epochs + 1)} <= per_epoch
    checkpoint = context.trial_dir / "checkpoint"
    assert (checkpoint / "config.json").is_file()
    assert (checkpoint / "tokenizer.json").is_file()
    labels = json.loads((checkpoint / "labels.json").read_text(encoding="utf-8"))["labels"]
    assert labels == config.labels
    assert summary["value"] == value
    assert summary["seed"] == training_seed(hpo, context.variant, trial.number)
    pointer = read_best_pointer(context.study_dir)
    assert pointer is not None
    assert pointer.trial_number == trial.number


def test_pruned_trial_raises_and_leaves_no_checkpoint(
    data: tuple[DataConfig, Path], tmp_path: Path
) -> None:
    config, data_dir = data
    hpo = hpo_config()
    study = new_study(hpo, pruner=AlwaysPrune())
    trial = study.ask()
    context = trial_context(hpo, tmp_path, data_dir, trial.number)
    with pytest.raises(optuna.TrialPruned):
        objective(trial, TINY, config, context)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert list(study.trials[0].intermediate_values) == [1]
    assert not (context.trial_dir / "checkpoint").exists()


def test_missing_backbone_path_names_backbone_and_path(
    data: tuple[DataConfig, Path], tmp_path: Path
) -> None:
    config, data_dir = data
    for source in (tmp_path / "no-such-model", tmp_path):  # absent, and a dir without a model
        backbone = BackboneConfig(name="missing-bert", model=str(source))
        with pytest.raises(InputError, match=r"missing-bert") as caught:
            train_token_classifier(backbone, config, data_dir, TRAINER, PARAMS, seed=0)
        assert str(source) in str(caught.value)


def test_unknown_hyperparameter_is_a_config_error() -> None:
    with pytest.raises(InputError, match="learning_rte"):
        HyperParams.from_params({"learning_rte": 0.1})
    with pytest.raises(InputError, match="whole number"):
        HyperParams.from_params({"batch_size": 8.5})
    assert HyperParams.from_params({"batch_size": 16.0, "epochs": 2}).batch_size == 16


def test_local_model_directory_is_loaded_with_a_new_head(
    data: tuple[DataConfig, Path], tmp_path: Path
) -> None:
    from transformers import BertConfig, BertForTokenClassification

    from hpoq.core.datasets import read_split
    from hpoq.workers.training.tokenizer import build_word_tokenizer

    config, data_dir = data
    # A "pretrained" model on disk with a 3-label head; the trainer needs 9 labels.
    model_dir = tmp_path / "my-bert"
    tokenizer = build_word_tokenizer([s.tokens for s in read_split(config, data_dir, "train")], 48)
    small = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    BertForTokenClassification(small).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    backbone = BackboneConfig(name="local-bert", model=str(model_dir))
    # 4 epochs: trained to the end, not stopped while still converging (with batches grouped
    # by length, a template-generated set converges more slowly over the first epochs).
    params = HyperParams(learning_rate=5e-3, batch_size=16, epochs=4)
    run = train_token_classifier(backbone, config, data_dir, TRAINER, params, seed=0)
    assert run.model.config.num_labels == len(config.labels)
    assert run.model.config.id2label[1] == "B-PER"
    assert run.final_scores.macro_f1 > 0.5
