"""MLflow runs of trials: created when the trial starts, terminated once with its state.

Shared: workers open and finish runs; the reaper fails the runs of trials it reaps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hpoq.core.objective import MetricPoint
from hpoq.core.retry import retry_call
from hpoq.core.trial_record import MLFLOW_STATUS, TrialRecord

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from optuna.trial import FrozenTrial

    from hpoq.config.experiment import Experiment
    from hpoq.core.variants import VariantRef

# What counts as MLflow being briefly unreachable rather than a bug.
TRANSIENT = (ConnectionError, TimeoutError, OSError)


def transient_errors() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException

    return (*TRANSIENT, MlflowException)


def start_trial_run(
    client: MlflowClient, experiment_id: str, record: TrialRecord, tags: dict[str, str]
) -> str:
    run = retry_call(
        lambda: client.create_run(
            experiment_id,
            tags=tags,
            run_name=f"{record.study_name}-trial-{record.trial_number}",
        ),
        what="MLflow create_run",
        retry_on=transient_errors(),
    )
    return str(run.info.run_id)


def finish_trial_run(
    client: MlflowClient,
    run_id: str,
    record: TrialRecord,
    extra_params: dict[str, Any] | None = None,
    extra_metrics: Sequence[MetricPoint] = (),
) -> None:
    """Log params, the metric and what the objective recorded (MLflow's client splits a
    batch at its limits), then set the terminal status matching the trial state. The
    record's value is the objective metric at step 0; a recorded point with the same key
    and step is left out so the metric's history holds it once."""
    from mlflow.entities import Metric, Param

    merged = {**record.params, **(extra_params or {})}
    params = [Param(k, str(v)) for k, v in sorted(merged.items())]
    metrics = [
        Metric(p.key, p.value, p.timestamp_ms, p.step)
        for p in extra_metrics
        if not (p.key == record.metric and p.step == 0 and record.value is not None)
    ]
    if record.value is not None:
        moment = record.datetime_complete or record.datetime_start
        timestamp = int(moment.timestamp() * 1000) if moment else 0
        metrics.append(Metric(record.metric, record.value, timestamp, 0))

    def log() -> None:
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_terminated(run_id, status=MLFLOW_STATUS[record.state])

    retry_call(log, what="MLflow log trial", retry_on=transient_errors())


def fail_run(client: MlflowClient, run_id: str, reason: str, error_tag: str) -> None:
    """Mark a run FAILED with the reason (a reaped trial, a crashed job)."""

    def mark() -> None:
        client.set_tag(run_id, error_tag, reason[:5000])
        client.set_terminated(run_id, status="FAILED")

    retry_call(mark, what="MLflow fail run", retry_on=transient_errors(), attempts=3)


def lost_trial_recorder(
    client: MlflowClient,
    experiment_id: Callable[[], str],
    experiment: Experiment,
    ref: VariantRef,
) -> Callable[[FrozenTrial, str], None]:
    """For the reaper, a trial without a run id (its worker died before recording one): the
    run the worker may have opened just before dying is found by the trial's tags and
    failed; when there is none, a FAILED run tagged like any trial's is logged, so every
    failed trial shows in MLflow."""
    from hpoq.core.mlflow_queries import query_runs_by_tags

    def record(trial: FrozenTrial, reason: str) -> None:
        process = experiment.tags.process
        mine = {process.study_name: ref.study_name, process.trial_number: str(trial.number)}
        opened = list(query_runs_by_tags(client, [experiment_id()], mine, status=None))
        if opened:
            for run in opened:
                if run.info.status == "RUNNING":
                    fail_run(client, run.info.run_id, reason, experiment.tags.benchmark.error)
            return
        lost = TrialRecord(
            state="FAIL",
            value=None,
            params=dict(trial.params),
            experiment=experiment.name,
            backbone=ref.backbone,
            study_name=ref.study_name,
            variant=ref.variant,
            trial_number=trial.number,
            metric=experiment.hpo.objective.metric,
        )
        run_id = start_trial_run(client, experiment_id(), lost, lost.mlflow_tags(experiment.tags))
        fail_run(client, run_id, reason, experiment.tags.benchmark.error)

    return record
