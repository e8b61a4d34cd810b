"""The built-in objective: fine-tune a backbone for NER and return validation macro-F1.

Imports of torch and transformers happen on the first call, so loading this module (as
the Celery task module does to resolve `objective.function`) stays cheap; Python keeps
them loaded for every later trial of the process.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

from hpoq.config.data import DataConfig
from hpoq.config.hpo import BackboneConfig, HpoConfig
from hpoq.core.datasets import ensure_dataset
from hpoq.core.objective import TrialContext, suggest_params
from hpoq.core.trial_record import write_json_atomic

if TYPE_CHECKING:
    import optuna

    from hpoq.workers.training.trainer import TrainingRun

TRAINING_SUMMARY = "training.json"


def trial_seed(hpo: HpoConfig, trial_number: int) -> int:
    """Different for every trial, the same when a study is replayed with the same sampler seed."""
    return (hpo.sampler.seed or 0) + trial_number


def objective(
    trial: optuna.Trial, backbone: BackboneConfig, data: DataConfig, context: TrialContext
) -> float:
    """Train with the sampled hyperparameters; the result is the last epoch's macro-F1."""
    from hpoq.workers.training.hyperparams import HyperParams
    from hpoq.workers.training.trainer import train_token_classifier

    sampled = suggest_params(trial, context.hpo.search_space)
    params = HyperParams.from_params(sampled)
    ensure_dataset(data, context.data_dir)
    seed = trial_seed(context.hpo, trial.number)
    started = time.perf_counter()
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
        )
        value = run.final_f1
        summary = {
            "backbone": backbone.name,
            "trial_number": trial.number,
            "seed": seed,
            "device": str(run.device),
            "precision": context.hpo.trainer.precision.value,
            "params": sampled,
            "metric": context.hpo.objective.metric,
            "value": value,
            "wall_seconds": time.perf_counter() - started,
            "epochs": [vars(record) for record in run.history],
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
