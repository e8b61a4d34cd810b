"""`hpoq benchmark` and `hpoq benchmark retry-failed` as importable functions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from hpoq.config.base import RunMode
from hpoq.config.experiment import Experiment
from hpoq.config.run_mode import get_benchmark_run_mode
from hpoq.core.benchmark_dispatch import DispatchReport, candidate_of, dispatch
from hpoq.core.benchmark_index import final_candidates, key_suffix, select_candidates
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.jobs import BenchmarkJob
from hpoq.core.measured_keys import finished_keys
from hpoq.producer.services import Services

log = logging.getLogger(__name__)


def benchmark_experiment(
    experiment: Experiment,
    services: Services,
    *,
    mode_override: str | RunMode | None = None,
    backbones: Sequence[str] | None = None,
) -> tuple[DispatchReport, list[str], list[str]]:
    """Retrieve the best trials and the finished final models, skip what is measured or in
    flight, enqueue the rest.

    Returns the report, the backbones with no trials, and retrieval warnings.
    """
    mode = get_benchmark_run_mode(experiment.benchmark, experiment.hpo, override=mode_override)
    client = services.mlflow()
    candidates, missing, warnings = select_candidates(
        experiment,
        services.runtime,
        backbones=list(backbones) if backbones else None,
        client=client,
    )
    candidates += final_candidates(experiment, client, list(backbones) if backbones else None)
    report = dispatch(
        experiment,
        services.runtime,
        candidates,
        mode=mode,
        leases=BenchmarkLeases(services.redis, services.keys),
        sender=services.celery,
        client=client,
    )
    return report, missing, warnings


def retry_failed(services: Services, experiment: Experiment | None = None) -> DispatchReport:
    """Re-enqueue every key whose latest attempt failed and that has no success since."""
    failed_hash = services.keys.failed_benchmarks()
    stored: dict[str, Any] = services.redis.hgetall(failed_hash)  # type: ignore[assignment]
    jobs = []
    for key, raw in stored.items():
        try:
            jobs.append(BenchmarkJob.model_validate_json(raw))
        except ValidationError as exc:
            # Recorded before jobs were checked this strictly: it can never run again.
            log.warning("dropping failed benchmark %r: not a valid job (%s)", key, exc)
            services.redis.hdel(failed_hash, key)
    if experiment is not None:
        suffix = key_suffix(experiment)
        jobs = [
            j
            for j in jobs
            if j.experiment.name == experiment.name and j.benchmark_key.endswith(suffix)
        ]
    client = services.mlflow()
    report = DispatchReport()
    leases = BenchmarkLeases(services.redis, services.keys)
    by_experiment: dict[str, list[BenchmarkJob]] = {}
    for job in jobs:
        by_experiment.setdefault(job.experiment.benchmark_experiment_name, []).append(job)
    for mlflow_name, group_jobs in by_experiment.items():
        succeeded = finished_keys(client, mlflow_name, [j.benchmark_key for j in group_jobs])
        for job in group_jobs:
            if job.benchmark_key in succeeded:
                services.redis.hdel(failed_hash, job.benchmark_key)
                continue
            part = dispatch(
                job.experiment,
                services.runtime,
                [candidate_of(job)],
                mode=RunMode.REUSE_IF_EXISTS,
                leases=leases,
                sender=services.celery,
                client=client,
            )
            if part.enqueued or part.skipped_done:
                services.redis.hdel(failed_hash, job.benchmark_key)
            report.enqueued += part.enqueued
            report.skipped_done += part.skipped_done
            report.skipped_in_flight += part.skipped_in_flight
    return report
