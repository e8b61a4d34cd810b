"""Small experiments for tests, written as real YAML files (the loader is part of the path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpoq.config.experiment import Experiment
from hpoq.config.loader import load_experiment
from hpoq.core.benchmark_key import build_benchmark_key
from hpoq.core.fingerprints import trial_key_hash
from hpoq.core.jobs import BenchmarkJob

CHEAP_OBJECTIVE = "hpoq.workers.objectives.cheap:objective"
CHEAP_RUNNER = "hpoq.workers.bench.cheap:run_inference_benchmark"


def write_experiment(
    root: Path,
    *,
    name: str = "exp",
    backbones: tuple[str, ...] = ("tiny",),
    n_trials: int = 4,
    objective: str = CHEAP_OBJECTIVE,
    run_mode: str | None = None,
    auto_resume: bool = True,
    hpo_extra: dict[str, Any] | None = None,
    benchmark_extra: dict[str, Any] | None = None,
) -> Path:
    """Write config/{hpo,data,...}.yaml and config/experiment/<name>.yaml under `root`."""
    config = root / "config"
    (config / "experiment").mkdir(parents=True, exist_ok=True)
    hpo: dict[str, Any] = {
        "backbones": [
            {
                "name": b,
                "architecture": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 64,
                },
            }
            for b in backbones
        ],
        "n_trials": n_trials,
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [8, 16]},
            "epochs": {"type": "int", "low": 1, "high": 2},
        },
        "sampler": {"type": "tpe", "seed": 7},
        "pruner": {"type": "none"},
        "objective": {"function": objective, "metric": "macro-f1", "direction": "maximize"},
        "run": {"mode": run_mode},
        "checkpoint": {"auto_resume": auto_resume},
        "stale_trial_grace_seconds": 30,
        **(hpo_extra or {}),
    }
    data = {
        "name": "synthetic-ner",
        "version": "1",
        "format": "conll",
        "local_path": str(root / "data"),
        "splits": {"train": "train.conll", "validation": "validation.conll", "test": "test.conll"},
        "labels": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"],
        "synthetic": {
            "seed": 3,
            "train_sentences": 60,
            "validation_sentences": 20,
            "test_sentences": 20,
        },
    }
    runner = CHEAP_RUNNER if objective == CHEAP_OBJECTIVE else None
    benchmark = {
        "batch_sizes": [1, 4],
        "warmup_iterations": 1,
        "iterations": 3,
        "max_seq_length": 32,
        **({"runner": runner} if runner else {}),
        **(benchmark_extra or {}),
    }
    files = {
        "hpo.yaml": hpo,
        "data.yaml": data,
        "benchmark.yaml": benchmark,
        "selection.yaml": {"objective": {"metric": "macro-f1", "direction": "maximize"}},
    }
    for file_name, content in files.items():
        (config / file_name).write_text(yaml.safe_dump(content, sort_keys=False))
    experiment = {
        "name": name,
        "hpo": "../hpo.yaml",
        "data": "../data.yaml",
        "benchmark": "../benchmark.yaml",
        "selection": "../selection.yaml",
    }
    path = config / "experiment" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


def make_experiment(root: Path, **kwargs: Any) -> Experiment:
    return load_experiment(write_experiment(root, **kwargs))


def benchmark_job(
    experiment: Experiment,
    *,
    backbone: str,
    study_name: str,
    variant: int,
    trial_number: int = 0,
    run_id: str | None = "0123456789abcdef0123456789abcdef",
    data_dir: str = "data",
    job_id: str = "bench-1",
) -> BenchmarkJob:
    """A benchmark job as a producer builds it for one trial (its key included)."""
    trial_id = trial_key_hash(backbone, study_name, trial_number)
    return BenchmarkJob(
        job_id=job_id,
        experiment=experiment,
        data_dir=data_dir,
        backbone=backbone,
        study_name=study_name,
        variant=variant,
        trial_number=trial_number,
        trial_id=trial_id,
        run_id=run_id,
        benchmark_key=build_benchmark_key(
            backbone=backbone,
            variant=study_name,
            run_id=run_id,
            trial_id=trial_id,
            data=experiment.data,
            benchmark=experiment.benchmark,
        ),
        fence=1,
    )
