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
    final_training: dict[str, Any] | None = None,
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
    if final_training is not None:
        files["final_training.yaml"] = final_training
    for file_name, content in files.items():
        (config / file_name).write_text(yaml.safe_dump(content, sort_keys=False))
    experiment: dict[str, Any] = {
        "name": name,
        "hpo": "../hpo.yaml",
        "data": "../data.yaml",
        "benchmark": "../benchmark.yaml",
        "selection": "../selection.yaml",
    }
    if final_training is not None:
        experiment["final_training"] = "../final_training.yaml"
    path = config / "experiment" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


def make_experiment(root: Path, **kwargs: Any) -> Experiment:
    return load_experiment(write_experiment(root, **kwargs))


CONLL = {
    "train.conll": "Anna\tB-PER\nvisited\tO\nOslo\tB-LOC\n\n",
    "dev.conll": "Ben\tB-PER\nleft\tO\n\n",
    "test.conll": "Lagos\tB-LOC\n\n",
}


def user_experiment(root: Path) -> Experiment:
    """User CoNLL files (no synthetic spec) next to the config, a local model directory
    and a hub id, all named by relative paths."""
    path = write_experiment(root, backbones=("local", "hub"))
    data = yaml.safe_load((root / "config" / "data.yaml").read_text())
    data.pop("synthetic")
    data["local_path"] = "../ner"
    data["splits"] = {"train": "train.conll", "validation": "dev.conll", "test": "test.conll"}
    (root / "config" / "data.yaml").write_text(yaml.safe_dump(data))
    hpo = yaml.safe_load((root / "config" / "hpo.yaml").read_text())
    hpo["backbones"] = [
        {"name": "local", "model": "../models/tiny"},
        {"name": "hub", "model": "org/base"},
    ]
    (root / "config" / "hpo.yaml").write_text(yaml.safe_dump(hpo))
    for name, text in CONLL.items():
        (root / "ner" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "ner" / name).write_text(text)
    (root / "ner" / "notes.txt").write_text("not a split: never published")
    model_dir = root / "models" / "tiny"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text('{"model_type": "bert"}')
    (model_dir / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    (model_dir / "model.safetensors").write_bytes(b"\x00" * 4096)
    return load_experiment(path)


class _NothingUploaded:
    def publish(self, *args: Any) -> bool:
        return False


def unpublished_job_experiment(experiment: Experiment) -> Experiment:
    """The experiment as a job carries it (content addresses, no host path) without
    uploading anything: for payloads a worker must refuse before it fetches a file."""
    from hpoq.core.job_inputs import prepare_inputs, publish_inputs

    return publish_inputs(prepare_inputs(experiment), _NothingUploaded())  # type: ignore[arg-type]


def seed_mlflow_store(template: Path, output: Path) -> None:
    """Put a copy of the template store where hpoq's local default looks (<output>/mlflow.db),
    copied with SQLite's backup API so that the copy is consistent."""
    import contextlib
    import sqlite3

    output.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(sqlite3.connect(template)) as source,
        contextlib.closing(sqlite3.connect(output / "mlflow.db")) as target,
    ):
        source.backup(target)


def benchmark_job(
    experiment: Experiment,
    *,
    backbone: str,
    study_name: str,
    variant: int,
    trial_number: int = 0,
    run_id: str | None = "0123456789abcdef0123456789abcdef",
    job_id: str = "bench-1",
) -> BenchmarkJob:
    """A benchmark job as a producer builds it for one trial (its key included), carrying
    the experiment as jobs do (content addresses, no host path)."""
    trial_id = trial_key_hash(backbone, study_name, trial_number)
    return BenchmarkJob(
        job_id=job_id,
        experiment=unpublished_job_experiment(experiment),
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
