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
from hpoq.core.final_runs import FinalRun, final_runs
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


def _candidate(
    experiment: Experiment,
    *,
    backbone: str,
    study_name: str,
    variant: int,
    trial_number: int,
    trial_id: str,
    run_id: str | None,
) -> Candidate:
    """A model to benchmark and its key, which names its variant, run and trial."""
    key = build_benchmark_key(
        backbone=backbone,
        variant=study_name,
        run_id=run_id,
        trial_id=trial_id,
        data=experiment.data,
        benchmark=experiment.benchmark,
    )
    return Candidate(
        backbone=backbone,
        study_name=study_name,
        variant=variant,
        trial_number=trial_number,
        trial_id=trial_id,
        run_id=run_id,
        key=key,
    )


def candidate_for(experiment: Experiment, best: BestTrial) -> Candidate:
    return _candidate(
        experiment,
        backbone=best.backbone,
        study_name=best.study_name,
        variant=best.variant,
        trial_number=best.trial_number,
        trial_id=best.trial_id,
        run_id=best.run_id,
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


def final_candidate(experiment: Experiment, run: FinalRun) -> Candidate:
    """A finished final model and its key: the variant is its name (`final_{backbone}...`),
    the run id its final run's, the trial id the HPO trial it was trained from."""
    return _candidate(
        experiment,
        backbone=run.backbone,
        study_name=run.name,
        variant=run.variant,
        trial_number=run.source_trial_number or 0,
        trial_id=run.source_trial_id,
        run_id=run.run_id,
    )


def final_candidates(
    experiment: Experiment, client: MlflowClient, backbones: list[str] | None = None
) -> list[Candidate]:
    """Every finished final model of the experiment (of `backbones`), as candidates."""
    if experiment.final_training is None:
        return []
    runs = final_runs(client, experiment, status="FINISHED")
    return [
        final_candidate(experiment, run)
        for run in runs
        if run.source_trial_id and (backbones is None or run.backbone in backbones)
    ]


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
