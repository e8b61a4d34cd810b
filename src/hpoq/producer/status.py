"""`hpoq status`: queues, workers, benchmarks in flight, where each variant stands (and
the command that finishes it when it stopped short), failures and dead letters.

Reads Redis, the broker's queue lengths (producer/queue_depth.py), Celery's control
channel and the Optuna storage only: it works from a machine that has just the producer
installed. After an `hpoq run` (which stops the
embedded Redis it started) Redis is read from a copy of its data (`services.snapshot`):
queues, failed jobs and benchmarks are what the run left, and no worker is asked.
"""

from __future__ import annotations

import shlex
from typing import Any

from hpoq.config.experiment import Experiment
from hpoq.core.jobs import JOB_QUEUES
from hpoq.core.variants import base_study_name
from hpoq.producer.services import Services

INSPECT_TIMEOUT_S = 1.0
LOGS_DIR = "logs"  # <output>/logs/worker-<n>.log: the workers `hpoq run` starts
RECENT_DEAD_LETTERS = 10


def _queues(services: Services) -> dict[str, int]:
    from hpoq.producer.queue_depth import queue_lengths

    return queue_lengths(services.celery, services.redis, services.redis_url, JOB_QUEUES)


def _describe_task(task: dict[str, Any]) -> dict[str, Any]:
    payload = (task.get("args") or [{}])[0]
    if not isinstance(payload, dict):
        payload = {}
    return {
        "task": task.get("name"),
        "job_id": task.get("id"),
        "backbone": payload.get("backbone"),
        "study_name": payload.get("study_name"),
        "benchmark_key": payload.get("benchmark_key"),
    }


def _workers(services: Services) -> dict[str, list[dict[str, Any]]]:
    if services.snapshot:
        return {}  # the run that used this Redis is over: no worker can answer
    inspector = services.celery.control.inspect(timeout=INSPECT_TIMEOUT_S)
    active = inspector.active() or {}
    return {name: [_describe_task(t) for t in tasks] for name, tasks in sorted(active.items())}


def _leases(services: Services) -> list[dict[str, str]]:
    pattern = services.keys.benchmark_lease("*")
    return [
        {"lease": str(key).rsplit(":", 1)[-1], "holder": str(services.redis.get(key))}
        for key in services.redis.scan_iter(pattern, count=1000)
    ]


def _variants(
    services: Services, experiment: Experiment, experiment_path: str | None
) -> list[dict[str, Any]]:
    from hpoq.core.coordination.budget import TrialBudget
    from hpoq.core.fingerprints import study_key_hash
    from hpoq.core.variant_state import VariantState, variant_progress

    hpo = experiment.hpo
    store = services.runtime.study_store(hpo.checkpoint)
    budget = TrialBudget(services.redis, services.keys)
    rows = []
    for backbone in hpo.backbones:
        base = base_study_name(hpo.checkpoint.study_name, backbone.name)
        for ref in store.list_variants(backbone.name, base):
            study = store.load(ref)
            trials = [] if study is None else study.get_trials(deepcopy=False)
            status = budget.status(
                study_key_hash(ref.backbone, ref.study_name), hpo.stale_trial_grace_seconds
            )
            progress = variant_progress(trials, hpo, status)
            row: dict[str, Any] = {
                "backbone": ref.backbone,
                "variant": ref.variant,
                "study_name": ref.study_name,
                **progress.to_json(),
                "queued": status.pending,
                "lapsed_claims": status.lapsed,
            }
            if progress.state in (VariantState.INCOMPLETE, VariantState.FINISHED_WITH_FAILURES):
                row["command"] = finish_command(experiment_path, ref.backbone, ref.variant)
            rows.append(row)
    return rows


def finish_command(experiment_path: str | None, backbone: str, variant: int) -> str:
    """The command that tops up one variant."""
    path = shlex.quote(experiment_path) if experiment_path else "EXPERIMENT.yaml"
    return f"hpoq submit {path} --backbone {shlex.quote(backbone)} --variant {variant}"


def _final_trainings(
    services: Services, experiment: Experiment | None, experiment_path: str | None
) -> list[dict[str, Any]]:
    """Final trainings planned (of `experiment`): variant, seed, state (queued, running,
    lost with its worker, finished, failed), the error of a failed one and the command
    that trains a failed or lost one again."""
    from hpoq.core.final_trainings import planned_finals

    rows = []
    name = experiment.name if experiment is not None else None
    for planned in planned_finals(services.redis, services.keys, name):
        job, state = planned.job, planned.state
        row: dict[str, Any] = {
            "backbone": job.backbone,
            "study_name": job.study_name,
            "variant": job.variant,
            "seed": job.seed,
            "state": state,
            "job_id": job.job_id,
            "source": f"{job.source_study_name} trial {job.source_trial_number}",
        }
        path = shlex.quote(experiment_path) if experiment_path else "EXPERIMENT.yaml"
        if state == "failed":
            row["error"] = planned.error
            row["command"] = f"hpoq train-final {path} --retry-failed"
        elif state == "lost":
            row["command"] = f"hpoq train-final {path}"
        rows.append(row)
    return rows


def _dead_letters(services: Services) -> dict[str, Any]:
    from hpoq.core.coordination.dead_letters import DeadLetters

    letters = DeadLetters(services.redis)
    return {"count": letters.count(), "recent": letters.recent(RECENT_DEAD_LETTERS)}


def cluster_status(
    services: Services, experiment: Experiment | None = None, experiment_path: str | None = None
) -> dict[str, Any]:
    """`experiment_path`: as the user gave it, for the commands that finish a variant."""
    failed_jobs = services.redis.hgetall(services.keys.failed_jobs())
    failed_benchmarks = services.redis.hkeys(services.keys.failed_benchmarks())
    variants = _variants(services, experiment, experiment_path) if experiment is not None else []
    return {
        "settings": services.runtime.settings.describe(),
        "queues": _queues(services),
        "workers": _workers(services),
        "benchmarks_in_flight": _leases(services),
        "variants": variants,
        "incomplete_variants": [v for v in variants if "command" in v],
        "failed_jobs": failed_jobs,
        "failed_benchmarks": sorted(failed_benchmarks),
        "final_trainings": _final_trainings(services, experiment, experiment_path),
        "where": locations(services, experiment),
        "dead_letters": _dead_letters(services),
    }


# --- where things are -----------------------------------------------------------------


def locations(services: Services, experiment: Experiment | None) -> dict[str, Any]:
    """Which Redis was read, and where the outputs, logs, MLflow and the report are."""
    from hpoq.redaction import redact_url

    runtime = services.runtime
    root = runtime.layout.root
    logs = root / LOGS_DIR
    where: dict[str, Any] = {
        "redis": redact_url(services.redis_url),
        "redis_source": "snapshot" if services.snapshot else "live",
        "outputs": str(root),
        "worker_logs": str(logs) if logs.is_dir() else None,
        "mlflow": redact_url(runtime.mlflow_uri()),
        "studies": str(root / runtime.layout.platform / "hpo"),
        "report": None,
    }
    if services.snapshot:
        where["redis"] = f"copy of {runtime.layout.redis_dir()} (no embedded Redis running)"
    if experiment is not None:
        from hpoq.producer.report.build import default_report_path

        report = default_report_path(runtime, experiment)
        where["report"] = str(report) if report.is_file() else None
    return where
