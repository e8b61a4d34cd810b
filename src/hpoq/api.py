"""The Python API: each CLI command is a thin layer over one of these functions.

The notebook flow (retrieve the best trials, filter out what is benchmarked, benchmark the
rest) is three calls::

    from hpoq import api

    experiment = api.load_experiment("config/experiment/smoke.yaml")
    best = api.retrieve_best_trials(experiment)
    todo = api.filter_unbenchmarked(experiment, best.best)
    report = api.benchmark_trials(experiment, todo)

and `api.write_report(experiment)` writes the HTML report (`hpoq report`). With a
`final_training` file, `api.train_final_models(experiment)` enqueues the final trainings
(`hpoq train-final`) and `api.retrieve_final_models(experiment)` returns the finished final
models with their scores and checkpoints (`hpoq retrieve --stage final`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpoq.config.base import RunMode
from hpoq.config.experiment import Experiment
from hpoq.config.loader import load_experiment
from hpoq.config.run_mode import get_benchmark_run_mode
from hpoq.core.benchmark_dispatch import DispatchReport, dispatch, measured_keys
from hpoq.core.benchmark_index import candidate_for
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.retrieval import BestTrial, RetrievalResult
from hpoq.core.retrieval import retrieve_best_trials as _retrieve
from hpoq.core.runtime import Runtime
from hpoq.producer.local_run import run_experiment
from hpoq.producer.report.build import WrittenReport
from hpoq.producer.services import open_services
from hpoq.producer.submit import SubmitResult, Submitter

__all__ = [
    "benchmark_trials",
    "filter_unbenchmarked",
    "load_experiment",
    "retrieve_best_trials",
    "run_experiment",
    "submit",
    "write_report",
]


def submit(experiment: Experiment, mode: str | RunMode | None = None) -> list[SubmitResult]:
    """`hpoq submit`: allocate variants and enqueue trial jobs."""
    services = open_services(Runtime.from_settings())
    try:
        return Submitter(
            experiment,
            services.runtime,
            services.redis,
            services.keys,
            services.celery,
            mlflow=services.mlflow(),
        ).submit(mode_override=mode)
    finally:
        services.close()


def retrieve_best_trials(
    experiment: Experiment, scope: str | None = None, runtime: Runtime | None = None
) -> RetrievalResult:
    """`hpoq retrieve`: the best trial per backbone (or per variant)."""
    return _retrieve(experiment, runtime or Runtime.from_settings(), scope=scope)


def filter_unbenchmarked(
    experiment: Experiment, trials: Sequence[BestTrial], runtime: Runtime | None = None
) -> list[BestTrial]:
    """The trials whose benchmark key has no result yet (one MLflow query for all)."""
    from hpoq.core.tracking import make_client

    runtime = runtime or Runtime.from_settings()
    keys = {t.trial_id: candidate_for(experiment, t).key for t in trials}
    done = measured_keys(
        experiment, runtime, make_client(runtime.mlflow_uri()), list(keys.values())
    )
    return [t for t in trials if keys[t.trial_id] not in done]


def benchmark_trials(
    experiment: Experiment, trials: Sequence[BestTrial], mode: str | RunMode | None = None
) -> DispatchReport:
    """Enqueue benchmark jobs for `trials` (skipping keys measured or in flight)."""
    services = open_services(Runtime.from_settings())
    try:
        return dispatch(
            experiment,
            services.runtime,
            [candidate_for(experiment, t) for t in trials],
            mode=get_benchmark_run_mode(experiment.benchmark, experiment.hpo, override=mode),
            leases=BenchmarkLeases(services.redis, services.keys),
            sender=services.celery,
            client=services.mlflow(),
        )
    finally:
        services.close()


def train_final_models(
    experiment: Experiment, mode: str | RunMode | None = None
) -> list[dict[str, object]]:
    """`hpoq train-final`: enqueue the final training of each backbone's best trial."""
    from hpoq.producer.final_training import train_final

    services = open_services(Runtime.from_settings())
    try:
        return [
            item.to_json() for item in train_final(experiment, services, mode_override=mode).items
        ]
    finally:
        services.close()


def retrieve_final_models(
    experiment: Experiment, runtime: Runtime | None = None
) -> list[dict[str, object]]:
    """`hpoq retrieve --stage final`: the finished final models, their scores and checkpoints."""
    from hpoq.core.final_runs import final_models
    from hpoq.core.tracking import make_client

    runtime = runtime or Runtime.from_settings()
    return final_models(experiment, runtime.layout, make_client(runtime.mlflow_uri()))


def write_report(
    experiment: Experiment, path: Path | None = None, runtime: Runtime | None = None
) -> WrittenReport:
    """`hpoq report`: the HTML report (default `<output>/reports/<name>.html`), logged to
    MLflow."""
    from hpoq.producer.report.build import write_report as _write

    return _write(experiment, runtime or Runtime.from_settings(), path)
