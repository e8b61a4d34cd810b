"""A cheap, torch-free objective for orchestration tests.

The value is a smooth function of the sampled parameters (a concave quadratic with its
peak at 30% of every range), so samplers behave as on a real search and results are
reproducible. It reports intermediate values, honours pruning, can be slowed down with
HPOQ_CHEAP_OBJECTIVE_SLEEP (seconds per step) so tests can kill a worker mid-trial, and
leaves a small JSON checkpoint that the cheap benchmark runner reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpoq.config.data import DataConfig
from hpoq.config.hpo import (
    BackboneConfig,
    CategoricalParam,
    LogParam,
    SearchParam,
)
from hpoq.config.settings import load_settings
from hpoq.core.objective import TrialContext, suggest_params
from hpoq.core.trial_record import write_json_atomic

if TYPE_CHECKING:
    import optuna

SLEEP_ENV = "HPOQ_CHEAP_OBJECTIVE_SLEEP"  # Settings.cheap_objective_sleep
CHEAP_CHECKPOINT_FILE = "cheap_checkpoint.json"
STEPS = 3
PEAK = 0.3  # where in each parameter's range the optimum lies


def objective(
    trial: optuna.Trial, backbone: BackboneConfig, data: DataConfig, context: TrialContext
) -> float:
    import optuna

    params = suggest_params(trial, context.hpo.search_space)
    final = score(params, context.hpo.search_space)
    pause = load_settings().cheap_objective_sleep
    for step in range(1, STEPS + 1):
        if pause:
            time.sleep(pause)
        # Climbs towards the final value, like a learning curve.
        reached = final * step / STEPS
        trial.report(reached, step)
        context.metrics.log_epoch(step, {context.hpo.objective.metric: reached})
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")
    if context.hpo.checkpoint.enabled:
        _save_checkpoint(trial.number, final, params, backbone, data, context)
    return final


def score(params: Mapping[str, Any], space: Mapping[str, SearchParam]) -> float:
    """1 at the peak, falling quadratically to 0 at the far end of every range."""
    if not params:
        return 1.0
    distances = [(_position(params[name], space[name]) - PEAK) ** 2 for name in params]
    return 1.0 - sum(distances) / (len(distances) * (1.0 - PEAK) ** 2)


def _position(value: Any, spec: SearchParam) -> float:
    """Where a value sits in its range, from 0 to 1 (log scale for log parameters)."""
    if isinstance(spec, CategoricalParam):
        if len(spec.choices) == 1:
            return PEAK
        return spec.choices.index(value) / (len(spec.choices) - 1)
    low, high, x = float(spec.low), float(spec.high), float(value)
    if low == high:  # a pinned value sits at the peak, like a single choice
        return PEAK
    if isinstance(spec, LogParam) or spec.log:
        low, high, x = math.log(low), math.log(high), math.log(x)
    return (x - low) / (high - low)


def _save_checkpoint(
    trial_number: int,
    value: float,
    params: Mapping[str, Any],
    backbone: BackboneConfig,
    data: DataConfig,
    context: TrialContext,
) -> None:
    from hpoq.workers.training.checkpoints import commit_checkpoint

    payload = {
        "kind": "cheap",
        "backbone": backbone.name,
        "data": data.name,
        "trial_number": trial_number,
        "value": value,
        "params": dict(params),
    }

    def write(directory: Path) -> None:
        write_json_atomic(directory / CHEAP_CHECKPOINT_FILE, payload)

    commit_checkpoint(
        context.study_dir,
        context.trial_dir,
        trial_number,
        value,
        context.hpo.objective.direction,
        write,
        save_only_best=context.hpo.checkpoint.save_only_best,
    )
