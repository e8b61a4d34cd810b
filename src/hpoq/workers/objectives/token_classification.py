"""The built-in objective: fine-tune a backbone for NER and return the validation score
that `objective.metric` names (entity micro-F1, macro-F1, precision or recall).

Every epoch leaves one line in the worker log and its scores in the trial's metrics
(`epoch/<name>` at step = epoch); the trial's run also gets every final score and the F1
of each entity type (`f1.<TYPE>`).

Imports of torch and transformers happen on the first call, so loading this module (as
the Celery task module does to resolve `objective.function`) stays cheap; Python keeps
them loaded for every later trial of the process.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import TYPE_CHECKING, Any

from hpoq.config.data import DataConfig
from hpoq.config.hpo import BackboneConfig, HpoConfig
from hpoq.core.datasets import ensure_dataset
from hpoq.core.objective import TrialContext, suggest_params
from hpoq.core.trial_record import write_json_atomic
from hpoq.core.trial_seeds import TRAINING, trial_seed

if TYPE_CHECKING:
    import optuna

    from hpoq.workers.training.trainer import EpochRecord, TrainingRun

TRAINING_SUMMARY = "training.json"
log = logging.getLogger(__name__)


def training_seed(hpo: HpoConfig, variant: int, trial_number: int) -> int:
    """Weights and batch order of a trial: the same for a rerun of the trial, different for
    every other trial and variant (a warm-started variant re-measures its first point with
    a fresh seed instead of repeating the earlier measurement)."""
    return trial_seed(hpo.sampler.seed or 0, variant, trial_number, TRAINING)


def objective(
    trial: optuna.Trial, backbone: BackboneConfig, data: DataConfig, context: TrialContext
) -> float:
    """Train with the sampled hyperparameters; the result is the last epoch's score of
    `objective.metric`."""
    from hpoq.workers.training.hyperparams import HyperParams
    from hpoq.workers.training.trainer import train_token_classifier

    sampled = suggest_params(trial, context.hpo.search_space)
    params = HyperParams.from_params(sampled)
    ensure_dataset(data, context.data_dir)
    seed = training_seed(context.hpo, context.variant, trial.number)
    metric = context.hpo.objective.metric
    started = time.perf_counter()

    def on_epoch(record: EpochRecord) -> None:
        scores = record.validation.as_metrics()
        log.info(
            "trial %d of %s, epoch %d/%d: train loss %.4f, %s %.4f, %.1f s",
            trial.number,
            context.study_name,
            record.epoch,
            params.epochs,
            record.train_loss,
            metric,
            scores[metric],
            record.seconds,
        )
        context.metrics.log_epoch(
            record.epoch, {**scores, "train_loss": record.train_loss, "seconds": record.seconds}
        )

    run: TrainingRun | None = None
    try:
        run = train_token_classifier(
            backbone,
            data,
            context.data_dir,
            context.hpo.trainer,
            params,
            seed,
            device=context.device,
            trial=trial,
            metric=metric,
            on_epoch=on_epoch,
        )
        final = run.final_scores.as_metrics()
        value = final[metric]
        context.metrics.log(final)
        summary = {
            "backbone": backbone.name,
            "trial_number": trial.number,
            "seed": seed,
            "device": str(run.device),
            "precision": context.hpo.trainer.precision.value,
            "params": sampled,
            "metric": metric,
            "value": value,
            "scores": final,
            "wall_seconds": time.perf_counter() - started,
            "epochs": [record.to_json() for record in run.history],
        }
        write_json_atomic(context.trial_dir / TRAINING_SUMMARY, summary)
        # Only a trial that got here (not pruned, not failed) leaves a checkpoint.
        if context.hpo.checkpoint.enabled:
            _save_checkpoint(run, trial.number, value, context, summary)
        return value
    except BaseException as exc:
        # The traceback keeps the trainer's frames, and with them the model and optimizer,
        # alive until the worker drops the exception: clear them so _release frees memory.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        _release(run)


def _save_checkpoint(
    run: TrainingRun,
    trial_number: int,
    value: float,
    context: TrialContext,
    summary: dict[str, Any],
) -> None:
    from hpoq.workers.training.checkpoints import commit_checkpoint, write_model_files

    metadata = {**summary, "max_length": run.max_length}
    commit_checkpoint(
        context.study_dir,
        context.trial_dir,
        trial_number,
        value,
        context.hpo.objective.direction,
        lambda directory: write_model_files(
            directory, run.model, run.tokenizer, run.labels, metadata
        ),
        save_only_best=context.hpo.checkpoint.save_only_best,
    )


def _release(run: TrainingRun | None) -> None:
    """Drop the model now, not at the next trial: a worker runs many trials on one GPU."""
    from hpoq.workers.accelerator_memory import release_accelerator_memory

    if run is not None:
        run.model = None
        run.train.clear()
        run.validation.clear()
    release_accelerator_memory()
