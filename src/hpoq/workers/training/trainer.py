"""Fine-tune a backbone for token classification: a plain torch loop, AdamW, linear warmup.

`prepare` loads data and model, `fit` trains and scores on validation after every epoch
(every entity-level score; the configured metric goes to the trial), `evaluate` scores
without training. `train_token_classifier` chains them under one seed.

Padding follows the data (`trainer.length_grouping`, on by default): every batch is
padded to its longest sentence, training batches group sentences of similar length in a
random order that changes every epoch (`batching.length_grouped_batches`), and evaluation
runs over length-sorted batches whose predictions go back to the sentences' own order.
Off, training batches are plain shuffles and evaluation keeps the file's order.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hpoq.config.base import Precision
from hpoq.config.data import DataConfig
from hpoq.config.hpo import BackboneConfig, TrainerConfig
from hpoq.core.datasets import Sentence, read_split
from hpoq.core.datasets.readers import SplitName
from hpoq.errors import InputError
from hpoq.workers.training.batching import (
    length_grouped_batches,
    padding_fraction,
    shuffled_batches,
    sorted_batches,
)
from hpoq.workers.training.device import autocast, resolve_device, seed_everything
from hpoq.workers.training.encoding import Encoded, collate, encode, word_predictions
from hpoq.workers.training.hyperparams import HyperParams
from hpoq.workers.training.metrics import EntityScores, entity_scores
from hpoq.workers.training.model_loading import load_backbone

if TYPE_CHECKING:
    import optuna

EVAL_BATCH_SIZE = 64
MAX_GRAD_NORM = 1.0  # clipping keeps the high learning rates of tiny models from diverging


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based: the step reported to Optuna is the number of epochs done
    train_loss: float
    validation: EntityScores
    seconds: float
    padding_fraction: float = 0.0  # share of the training batches' positions that are padding

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "seconds": self.seconds,
            "padding_fraction": self.padding_fraction,
            **self.validation.as_metrics(),
        }


@dataclass
class TrainingRun:
    """A model on its device with the encoded train and validation splits."""

    model: Any
    tokenizer: Any
    labels: tuple[str, ...]
    max_length: int
    device: torch.device
    train: list[Encoded]
    validation: list[Encoded]
    validation_gold: list[tuple[str, ...]]
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def final_scores(self) -> EntityScores:
        """The validation scores after the last epoch."""
        if not self.history:
            raise RuntimeError("the model has not been trained")
        return self.history[-1].validation


def prepare(
    backbone: BackboneConfig,
    data: DataConfig,
    data_dir: Path,
    trainer: TrainerConfig,
    params: HyperParams,
    device: str | None = None,
    train_splits: Sequence[SplitName] = ("train",),
) -> TrainingRun:
    """Read the splits, build the tokenizer and model, and move the model to its device.
    The model trains on `train_splits` (a final model: train and validation) and is
    scored on validation."""
    train = [s for split in train_splits for s in read_split(data, data_dir, split)]
    train = _non_empty(train, data, "+".join(train_splits))
    validation = _non_empty(read_split(data, data_dir, "validation"), data, "validation")
    loaded = load_backbone(
        backbone,
        data.labels,
        (s.tokens for s in train),
        trainer.max_seq_length,
        params.dropout,
    )
    label2id = {label: index for index, label in enumerate(data.labels)}
    target = resolve_device(device)
    return TrainingRun(
        model=loaded.model.to(target),
        tokenizer=loaded.tokenizer,
        labels=tuple(data.labels),
        max_length=loaded.max_length,
        device=target,
        train=encode(loaded.tokenizer, train, label2id, loaded.max_length),
        validation=encode(loaded.tokenizer, validation, label2id, loaded.max_length),
        validation_gold=[s.tags for s in validation],
    )


def predict(
    run: TrainingRun,
    precision: Precision | str = Precision.FP32,
    sort_by_length: bool = True,
    items: Sequence[Encoded] | None = None,
) -> list[list[str]]:
    """Word-level tags of every validation sentence (or of `items`), in the split's order.
    Sorted by length, batches are padded less; the predictions are the same as in file
    order (each row's padding is masked out), only computed in fewer padded positions."""
    encoded = run.validation if items is None else items
    id2label = dict(enumerate(run.labels))
    pad_id = int(run.tokenizer.pad_token_id)
    lengths = [len(item.input_ids) for item in encoded]
    if sort_by_length:
        batches = sorted_batches(lengths, EVAL_BATCH_SIZE)
    else:
        batches = [
            list(range(start, min(start + EVAL_BATCH_SIZE, len(lengths))))
            for start in range(0, len(lengths), EVAL_BATCH_SIZE)
        ]
    predicted: list[list[str]] = [[] for _ in lengths]
    run.model.eval()
    with torch.inference_mode():
        for indices in batches:
            batch = [encoded[i] for i in indices]
            tensors = collate(batch, pad_id)
            with autocast(run.device, precision):
                logits = run.model(
                    input_ids=tensors["input_ids"].to(run.device),
                    attention_mask=tensors["attention_mask"].to(run.device),
                ).logits
            tags = word_predictions(batch, logits.argmax(dim=-1).cpu(), id2label)
            for index, sentence_tags in zip(indices, tags, strict=True):
                predicted[index] = sentence_tags
    return predicted


def evaluate(
    run: TrainingRun, precision: Precision | str = Precision.FP32, sort_by_length: bool = True
) -> EntityScores:
    """Entity-level scores of the current model on the validation split."""
    return entity_scores(run.validation_gold, predict(run, precision, sort_by_length))


def score_split(
    run: TrainingRun,
    data: DataConfig,
    data_dir: Path,
    split: SplitName,
    precision: Precision | str = Precision.FP32,
    sort_by_length: bool = True,
) -> EntityScores:
    """Entity-level scores of the current model on any split of the data (a final model's
    train, validation and test scores)."""
    sentences = _non_empty(read_split(data, data_dir, split), data, split)
    label2id = {label: index for index, label in enumerate(run.labels)}
    items = encode(run.tokenizer, sentences, label2id, run.max_length)
    predicted = predict(run, precision, sort_by_length, items)
    return entity_scores([s.tags for s in sentences], predicted)


def fit(
    run: TrainingRun,
    params: HyperParams,
    precision: Precision | str,
    seed: int,
    trial: optuna.Trial | None = None,
    metric: str = "macro-f1",
    on_epoch: Callable[[EpochRecord], None] | None = None,
    length_grouping: bool = True,
) -> list[EpochRecord]:
    """Train for `params.epochs`; after each epoch, hand its record to `on_epoch`, report
    `metric` to the trial and honour its pruner. `length_grouping` batches sentences of
    similar length together (see the module docstring)."""
    import optuna

    model = run.model
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, params.weight_decay), lr=params.learning_rate
    )
    total_steps = math.ceil(len(run.train) / params.batch_size) * params.epochs
    scheduler = _linear_warmup(optimizer, round(params.warmup_ratio * total_steps), total_steps)
    # The batch order has its own generator: independent of whatever else draws numbers.
    order_rng = random.Random(seed)
    pad_id = int(run.tokenizer.pad_token_id)
    lengths = [len(item.input_ids) for item in run.train]
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        model.train()
        if length_grouping:
            batches = length_grouped_batches(lengths, params.batch_size, order_rng)
        else:
            batches = shuffled_batches(len(lengths), params.batch_size, order_rng)
        loss_sum = torch.zeros((), device=run.device)
        for indices in batches:
            batch = [run.train[i] for i in indices]
            tensors = {k: v.to(run.device) for k, v in collate(batch, pad_id).items()}
            with autocast(run.device, precision):
                loss = model(**tensors).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # Accumulate on the device: .item() every step would stall the GPU.
            loss_sum += loss.detach().float() * len(batch)
        scores = evaluate(run, precision, sort_by_length=length_grouping)
        record = EpochRecord(
            epoch,
            loss_sum.item() / len(run.train),
            scores,
            time.perf_counter() - started,
            padding_fraction(lengths, batches),
        )
        run.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if trial is not None:
            value = scores.metric(metric)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} ({metric} {value:.4f})")
    return run.history


def train_token_classifier(
    backbone: BackboneConfig,
    data: DataConfig,
    data_dir: Path,
    trainer: TrainerConfig,
    params: HyperParams,
    seed: int,
    device: str | None = None,
    trial: optuna.Trial | None = None,
    metric: str = "macro-f1",
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainingRun:
    """Seed, prepare and fit; the run's `final_scores` are the last epoch's validation
    scores, and `metric` is what the trial sees each epoch."""
    seed_everything(seed)
    requested = device if device is not None else trainer.device
    run = prepare(backbone, data, data_dir, trainer, params, requested)
    fit(run, params, trainer.precision, seed, trial, metric, on_epoch, trainer.length_grouping)
    return run


def _linear_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear rise to the peak rate over warmup_steps, then linear decay to zero at the end."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _parameter_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights, as in BERT's recipe."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or "norm" in name.lower():
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _non_empty(sentences: Sequence[Sentence], data: DataConfig, split: str) -> list[Sentence]:
    if not sentences:
        raise InputError(f"data {data.name!r}: the {split} split has no sentences")
    return list(sentences)
