"""Canonical JSON, fingerprints and the benchmark key (see ARCHITECTURE.md, 'Benchmark key')."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig

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
