"""The objective contract: what a trial's function receives and returns.

An objective is `module:function` with the signature

    def objective(trial: optuna.Trial, backbone: BackboneConfig, data: DataConfig,
                  context: TrialContext) -> float

It samples its hyperparameters with `suggest_params(trial, context.hpo.search_space)`,
reports the metric per epoch with `trial.report(value, step)` and raises
`optuna.TrialPruned` when `trial.should_prune()`; it returns the objective metric.
It may record more values for the trial's MLflow run with `context.metrics.log(...)`
(per epoch with `step=epoch`, under `epoch/<name>`), and write what it likes under
`context.trial_dir`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hpoq.config.data import DataConfig
from hpoq.config.hpo import (
    BackboneConfig,
    CategoricalParam,
    FloatParam,
    HpoConfig,
    IntParam,
    LogParam,
    SearchParam,
)
from hpoq.errors import InputError

if TYPE_CHECKING:
    import optuna


EPOCH_PREFIX = "epoch/"


class MetricPoint(NamedTuple):
    key: str
    value: float
    timestamp_ms: int
    step: int


class TrialMetrics:
    """Values an objective records for its trial's MLflow run, besides the returned value.

    They are kept in memory and sent with the run's final batch when the trial ends
    (COMPLETE or PRUNED): no MLflow round trip on the training path, and an MLflow outage
    during training costs nothing but the retries at the end. The epoch's line in the
    worker log and the value reported to Optuna are the live view."""

    def __init__(self) -> None:
        self.points: list[MetricPoint] = []

    def log(self, values: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.points.extend(MetricPoint(k, float(v), now, step) for k, v in values.items())

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        """`values` as `epoch/<name>` at step `epoch`: the run's per-epoch history."""
        self.log({f"{EPOCH_PREFIX}{k}": v for k, v in values.items()}, step=epoch)


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides the Optuna trial itself."""

    hpo: HpoConfig
    study_name: str
    variant: int
    study_dir: Path  # the variant's folder (checkpoints, metrics.json of each trial)
    trial_dir: Path  # this trial's folder inside study_dir
    data_dir: Path  # the dataset's files on this machine
    device: str | None = None  # "cuda" / "cpu"; None lets the objective decide
    metrics: TrialMetrics = field(default_factory=TrialMetrics)  # logged with the run


Objective = Callable[..., float]


def suggest_params(trial: optuna.Trial, search_space: Mapping[str, SearchParam]) -> dict[str, Any]:
    """Sample every parameter of the search space, in the config's order."""
    params: dict[str, Any] = {}
    for name, spec in search_space.items():
        if isinstance(spec, FloatParam):
            params[name] = trial.suggest_float(
                name, spec.low, spec.high, log=spec.log, step=spec.step
            )
        elif isinstance(spec, LogParam):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=True)
        elif isinstance(spec, IntParam):
            params[name] = trial.suggest_int(
                name, spec.low, spec.high, log=spec.log, step=spec.step
            )
        elif isinstance(spec, CategoricalParam):
            params[name] = trial.suggest_categorical(name, spec.choices)
        else:  # pragma: no cover - the schema admits no other kind
            raise TypeError(f"unknown search parameter {name!r}")
    return params


def load_objective(path: str) -> Objective:
    """Import `module:function`; InputError names the path when it cannot be found."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"objective.function: cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise InputError(f"objective.function: {module_name!r} has no function {attr!r}")
    return function  # type: ignore[no-any-return]


__all__ = [
    "EPOCH_PREFIX",
    "BackboneConfig",
    "DataConfig",
    "MetricPoint",
    "Objective",
    "TrialContext",
    "TrialMetrics",
    "load_objective",
    "suggest_params",
]
