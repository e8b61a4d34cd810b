"""Canonical JSON, fingerprints and the benchmark key (see ARCHITECTURE.md, 'Benchmark key')."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.final_training import FinalTrainingConfig
from hpoq.config.hpo import BackboneConfig

FINGERPRINT_LENGTH = 16
CACHE_NAME_LENGTH = 32


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 as is: the same value always gives the same text."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(value: Any, length: int = FINGERPRINT_LENGTH) -> str:
    """Short, stable hash of a JSON-able value."""
    return sha256_hex(canonical_json(value))[:length]


def data_fingerprint(data: DataConfig) -> str:
    """Identifies the data; `local_path` (where it lies on this machine) is left out."""
    return fingerprint(data.fingerprint_payload())


def benchmark_fingerprint(benchmark: BenchmarkConfig) -> str:
    """Identifies what a measurement means: only the measurement fields count."""
    return fingerprint(benchmark.fingerprint_payload())


def study_key_hash(backbone: str, study_name: str) -> str:
    """Groups every run of one study variant (MLflow tag grouping.study_key_hash)."""
    return fingerprint({"backbone": backbone, "study_name": study_name})


def trial_key_hash(backbone: str, study_name: str, trial_number: int) -> str:
    """Names one trial across MLflow, Optuna and disk: it is the trial_id everywhere."""
    return fingerprint(
        {"study_key_hash": study_key_hash(backbone, study_name), "trial_number": trial_number}
    )


def final_spec_fingerprint(
    backbone: BackboneConfig,
    params: Mapping[str, Any],
    data: DataConfig,
    final: FinalTrainingConfig,
) -> str:
    """spec_fp: what defines a final model. The backbone's model reference (a Hugging Face
    id, a content address, or a built architecture), the chosen trial's hyperparameters,
    the data and the final-training fields that change the model (not seeds, precision,
    backbones or run mode). Computed on a portable experiment, so every host agrees."""
    return fingerprint(
        {
            "backbone": backbone.model_dump(mode="json"),
            "params": dict(params),
            "data_fp": data_fingerprint(data),
            "final_training": final.fingerprint_payload(),
        }
    )


def final_exec_fingerprint(
    *, seed: int, precision: str, torch_version: str, transformers_version: str, device: str
) -> str:
    """exec_fp: how a final model is executed. The seed, the precision, the torch and
    transformers versions and the kind of device."""
    return fingerprint(
        {
            "seed": seed,
            "precision": precision,
            "torch": torch_version,
            "transformers": transformers_version,
            "device": device,
        }
    )
