"""Which best trials to benchmark, under which keys, and which keys are already measured.

Done means: a FINISHED MLflow run in the benchmark experiment tagged `benchmark_key` with
the key and holding metrics, or a valid disk cache file for it. A FINISHED run without
metrics (logged by hand, or by a client that died between creating and filling it) is
not a measurement. `hpoq.core.measured_keys` asks MLflow about many keys at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from hpoq.config.benchmark import BenchmarkStrategy
from hpoq.config.experiment import Experiment
from hpoq.config.selection import SelectionScope
from hpoq.core import benchmark_key
from hpoq.core.benchmark_key import build_benchmark_key, cache_file_name
from hpoq.core.paths import OutputLayout
from hpoq.core.retrieval import BestTrial, retrieve_best_trials
from hpoq.core.runtime import Runtime

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class Candidate(BaseModel):
    """A best trial and the key it is benchmarked under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str
    study_name: str
    variant: int
    trial_number: int
    trial_id: str
    run_id: str | None
    key: str

    def to_json(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "variant": self.variant,
            "study_name": self.study_name,
            "trial": self.trial_number,
            "key": self.key,
        }


def key_suffix(experiment: Experiment) -> str:
    return benchmark_key.key_suffix(experiment.data, experiment.benchmark)


def candidate_for(experiment: Experiment, best: BestTrial) -> Candidate:
    key = build_benchmark_key(
        backbone=best.backbone,
        variant=best.study_name,
        run_id=best.run_id,
        trial_id=best.trial_id,
        data=experiment.data,
        benchmark=experiment.benchmark,
    )
    return Candidate(
        backbone=best.backbone,
        study_name=best.study_name,
        variant=best.variant,
        trial_number=best.trial_number,
        trial_id=best.trial_id,
        run_id=best.run_id,
        key=key,
    )


def select_candidates(
    experiment: Experiment,
    runtime: Runtime,
    *,
    backbones: list[str] | None = None,
    client: MlflowClient | None = None,
) -> tuple[list[Candidate], list[str], list[str]]:
    """Best trials to benchmark per the strategy: (candidates, missing backbones, warnings).

    - best_per_variant with benchmark_all_variants: the best trial of every variant;
    - best_per_variant without it: the best trial of each backbone across its variants;
    - latest_only: the best trial of each backbone's latest variant.
    """
    bench = experiment.benchmark
    per_variant = (
        bench.benchmark_strategy is BenchmarkStrategy.LATEST_ONLY or bench.benchmark_all_variants
    )
    scope = SelectionScope.PER_VARIANT if per_variant else SelectionScope.OVERALL
    result = retrieve_best_trials(
        experiment, runtime, scope=scope, backbones=backbones, client=client
    )
    best = result.best
    if bench.benchmark_strategy is BenchmarkStrategy.LATEST_ONLY:
        latest: dict[str, BestTrial] = {}
        for trial in best:
            if trial.backbone not in latest or trial.variant > latest[trial.backbone].variant:
                latest[trial.backbone] = trial
        best = sorted(latest.values(), key=lambda t: t.backbone)
    return [candidate_for(experiment, b) for b in best], result.missing, result.warnings


def cache_path(layout: OutputLayout, key: str) -> Path:
    return layout.benchmark_cache_dir() / cache_file_name(key)


def read_cache(layout: OutputLayout, key: str) -> dict[str, Any] | None:
    """The cached result of `key`, or None when absent, unreadable or for another key."""
    path = cache_path(layout, key)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("benchmark_key") != key:
        return None
    return payload


def cached_keys(layout: OutputLayout, keys: Iterable[str]) -> set[str]:
    return {key for key in keys if read_cache(layout, key) is not None}
