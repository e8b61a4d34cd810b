"""The error a worker recorded for work that failed: what `hpoq run` and `hpoq benchmark
--wait` print when they exit 1.

Workers tag every FAILED MLflow run with the error (`tags.benchmark.error`): a trial
whose objective raised, a benchmark that could not be measured. These lookups read it
back; MLflow being unreachable is not an error here, just no answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpoq.config.experiment import Experiment
from hpoq.config.tags import BENCHMARK_KEY_TAG
from hpoq.core.mlflow_queries import query_runs_by_tags
from hpoq.core.trial_record import STAGE_HPO

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
FAILED = "FAILED"
MAX_ERROR_CHARS = 2000


def first_trial_error(
    client: MlflowClient, experiment: Experiment, backbone: str, study_name: str
) -> str | None:
    """The error of the earliest FAILED trial of a variant, or None."""
    process = experiment.tags.process
    required = {
        process.stage: STAGE_HPO,
        process.experiment: experiment.name,
        process.backbone: backbone,
        process.study_name: study_name,
    }
    return _first_error(
        client, experiment, experiment.hpo_experiment_name, required, "attributes.start_time ASC"
    )


def benchmark_error(client: MlflowClient, experiment: Experiment, key: str) -> str | None:
    """The error of the latest FAILED attempt at a benchmark key, or None."""
    return _first_error(
        client,
        experiment,
        experiment.benchmark_experiment_name,
        {BENCHMARK_KEY_TAG: key},
        "attributes.start_time DESC",
    )


def _first_error(
    client: MlflowClient,
    experiment: Experiment,
    mlflow_experiment: str,
    required: dict[str, str],
    order: str,
) -> str | None:
    from hpoq.core.tracking import find_experiment_id

    error_tag = experiment.tags.benchmark.error
    try:
        experiment_id = find_experiment_id(client, mlflow_experiment)
        if experiment_id is None:
            return None
        runs = query_runs_by_tags(
            client, [experiment_id], required, status=FAILED, order_by=[order], page_size=50
        )
        for run in runs:
            error = run.data.tags.get(error_tag)
            if error:
                return error.strip()[:MAX_ERROR_CHARS]
    except Exception as exc:  # a lookup for a message must never hide the failure itself
        log.warning("could not read the recorded error from MLflow: %s", exc)
    return None


@dataclass(frozen=True)
class FailedRun:
    """A FAILED run of this experiment, what it was for and the error it recorded."""

    run_id: str
    backbone: str | None
    study_name: str | None
    trial_number: int | None
    key: str | None  # the benchmark key, for a benchmark's run
    error: str | None


def failed_runs(
    client: MlflowClient, experiment: Experiment, mlflow_experiment: str, stage: str
) -> list[FailedRun]:
    """Every FAILED run of this experiment's `stage` in `mlflow_experiment`, oldest first;
    [] when MLflow cannot answer."""
    from hpoq.core.mlflow_queries import parse_int_tag
    from hpoq.core.tracking import find_experiment_id

    process = experiment.tags.process
    required = {process.stage: stage, process.experiment: experiment.name}
    try:
        experiment_id = find_experiment_id(client, mlflow_experiment)
        if experiment_id is None:
            return []
        runs = list(
            query_runs_by_tags(
                client,
                [experiment_id],
                required,
                status=FAILED,
                order_by=["attributes.start_time ASC"],
            )
        )
    except Exception as exc:
        log.warning("could not read the failed runs from MLflow: %s", exc)
        return []
    found = []
    for run in runs:
        tags = run.data.tags
        error = (tags.get(experiment.tags.benchmark.error) or "").strip()
        found.append(
            FailedRun(
                run_id=run.info.run_id,
                backbone=tags.get(process.backbone),
                study_name=tags.get(process.study_name),
                trial_number=parse_int_tag(run, process.trial_number),
                key=tags.get(BENCHMARK_KEY_TAG),
                error=error[:MAX_ERROR_CHARS] or None,
            )
        )
    return found
