"""`hpoq run`: the whole system on one machine, from an experiment file to its results.

Brings up what is missing (embedded Redis, SQLite MLflow, local workers), submits the
sweep, follows it, makes sure every best trial is benchmarked, and tears down what it
started. In the default mode a second run finds everything done and starts no worker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpoq.config.base import RunMode
from hpoq.config.experiment import Experiment
from hpoq.core.benchmark_dispatch import measured_keys
from hpoq.core.benchmark_index import read_cache, select_candidates
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.optuna_setup import count_finished
from hpoq.core.retrieval import retrieve_best_trials
from hpoq.core.runtime import Runtime
from hpoq.core.variants import VariantRef
from hpoq.errors import HpoqError
from hpoq.producer.benchmark import benchmark_experiment
from hpoq.producer.local_cluster import LocalWorkers, default_worker_count
from hpoq.producer.services import Services, open_services
from hpoq.producer.submit import SubmitResult, Submitter

log = logging.getLogger(__name__)
POLL_S = 0.5
Progress = Callable[[str, int, int], None]  # (label, done, total)


@dataclass
class RunReport:
    experiment: str
    plan: list[SubmitResult]
    best_trials: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    benchmarks: list[dict[str, Any]] = field(default_factory=list)
    trials_enqueued: int = 0
    benchmarks_enqueued: int = 0
    warnings: list[str] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)  # variants short of n_trials

    @property
    def new_work(self) -> bool:
        return bool(self.trials_enqueued or self.benchmarks_enqueued)

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "plan": [r.to_json() for r in self.plan],
            "best_trials": self.best_trials,
            "missing": self.missing,
            "benchmarks": self.benchmarks,
            "new_work": self.new_work,
            "trials_enqueued": self.trials_enqueued,
            "benchmarks_enqueued": self.benchmarks_enqueued,
            "warnings": self.warnings,
            "stopped": self.stopped,
        }


def _worker_env(services: Services) -> dict[str, str]:
    env = dict(os.environ)
    env["HPOQ_REDIS_URL"] = services.redis_url
    env["HPOQ_OUTPUT_DIR"] = str(services.runtime.layout.root)
    env["HPOQ_PLATFORM"] = services.runtime.layout.platform
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_experiment(
    experiment: Experiment,
    runtime: Runtime,
    *,
    workers: int | None = None,
    mode_override: str | RunMode | None = None,
    progress: Progress | None = None,
    timeout_s: float | None = None,
) -> RunReport:
    from hpoq.core.datasets import ensure_dataset
    from hpoq.core.tracking import make_client

    services = open_services(runtime, start_embedded=True)
    pool = LocalWorkers(
        workers or default_worker_count(), _worker_env(services), runtime.layout.root / "logs"
    )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        ensure_dataset(experiment.data, experiment.data_dir())  # once, before any worker
        client = make_client(runtime.mlflow_uri())  # creates the SQLite store under a lock
        plan = Submitter(
            experiment, runtime, services.redis, services.keys, services.celery, mlflow=client
        ).submit(mode_override=mode_override)
        report = RunReport(experiment.name, plan)
        report.trials_enqueued = sum(r.trials_enqueued for r in plan)
        if _incomplete(experiment, runtime, plan):
            pool.start()
            report.stopped = _wait_for_trials(
                experiment, runtime, services, plan, pool, progress, deadline
            )
            report.warnings += [f"{v['study_name']}: {v['reason']}" for v in report.stopped]
        dispatched, _, warnings = benchmark_experiment(
            experiment, services, mode_override=mode_override
        )
        report.benchmarks_enqueued = len(dispatched.enqueued)
        report.warnings += warnings
        candidates, _, _ = select_candidates(experiment, runtime, client=client)
        keys = [c.key for c in candidates]
        if dispatched.enqueued or dispatched.skipped_in_flight:
            pool.start()
            _wait_for_benchmarks(experiment, services, keys, pool, progress, deadline, client)
        retrieval = retrieve_best_trials(experiment, runtime, client=client)
        report.best_trials = [t.model_dump(mode="json") for t in retrieval.best]
        report.missing = retrieval.missing
        report.benchmarks = [_benchmark_row(runtime, c.to_json()) for c in candidates]
        return report
    finally:
        pool.stop()
        services.close()
        if services.embedded is not None:
            services.embedded.stop()


def _variant_finished(experiment: Experiment, runtime: Runtime, result: SubmitResult) -> int:
    store = runtime.study_store(experiment.hpo.checkpoint)
    study = store.load(VariantRef(result.backbone, result.variant, result.study_name))
    return 0 if study is None else count_finished(study)


def _incomplete(experiment: Experiment, runtime: Runtime, plan: list[SubmitResult]) -> bool:
    n = experiment.hpo.n_trials
    return any(_variant_finished(experiment, runtime, r) < n for r in plan)


def _check(pool: LocalWorkers, deadline: float | None) -> None:
    if pool.alive() == 0:
        raise HpoqError(f"every worker exited; see the logs in {pool.log_dir}")
    if deadline is not None and time.monotonic() > deadline:
        raise HpoqError("timed out; the next run resumes where this one stopped")


def _wait_for_trials(
    experiment: Experiment,
    runtime: Runtime,
    services: Services,
    plan: list[SubmitResult],
    pool: LocalWorkers,
    progress: Progress | None,
    deadline: float | None,
) -> list[dict[str, Any]]:
    """Until every variant has finished, however it finished; returns those that stopped
    short of n_trials, with the reason."""
    from hpoq.core.coordination.budget import TrialBudget
    from hpoq.core.variant_state import variant_progress

    n = experiment.hpo.n_trials
    budget = TrialBudget(services.redis, services.keys)
    store = runtime.study_store(experiment.hpo.checkpoint)
    stopped: list[dict[str, Any]] = []
    waiting = list(plan)
    while waiting:
        for result in list(waiting):
            study = store.load(VariantRef(result.backbone, result.variant, result.study_name))
            status = budget.status(
                study_key_hash(result.backbone, result.study_name),
                lost_after_s=experiment.hpo.stale_trial_grace_seconds,
            )
            state = variant_progress(
                [] if study is None else study.get_trials(deepcopy=False), experiment.hpo, status
            )
            label = f"{result.backbone} {result.study_name}"
            if progress:
                progress(label, min(state.finished, n), n)
            if state.over:
                waiting.remove(result)
                if state.reason:
                    log.warning("%s %s", label, state.reason)
                    stopped.append(
                        {"backbone": result.backbone, "study_name": result.study_name}
                        | state.to_json()
                    )
        if waiting:
            _check(pool, deadline)
            time.sleep(POLL_S)
    return stopped


def _wait_for_benchmarks(
    experiment: Experiment,
    services: Services,
    keys: list[str],
    pool: LocalWorkers,
    progress: Progress | None,
    deadline: float | None,
    client: Any,
) -> None:
    from hpoq.core.coordination.leases import BenchmarkLeases

    leases = BenchmarkLeases(services.redis, services.keys)
    failed_hash = services.keys.failed_benchmarks()
    while True:
        done = measured_keys(experiment, services.runtime, client, keys)
        failed = {k for k in keys if services.redis.hexists(failed_hash, k)}
        settled = done | {
            k for k, h in zip(keys, leases.holders(keys), strict=True) if k in failed and h is None
        }
        if progress:
            progress("benchmarks", len(settled), len(keys))
        if len(settled) >= len(keys):
            return
        _check(pool, deadline)
        time.sleep(POLL_S)


def _benchmark_row(runtime: Runtime, candidate: dict[str, Any]) -> dict[str, Any]:
    cached = read_cache(runtime.layout, candidate["key"])
    row = dict(candidate)
    if cached is None:
        row["status"] = "missing"
        return row
    row["status"] = "measured"
    row["run_id"] = cached.get("run_id")
    result = cached.get("result") or {}
    row["device"] = result.get("device")
    row["entries"] = [
        {
            "precision": e["precision"],
            "batch_size": e["batch_size"],
            "status": e["status"],
            "latency_p50_ms": (e.get("latency_ms") or {}).get("p50"),
            "latency_p95_ms": (e.get("latency_ms") or {}).get("p95"),
            "throughput_sentences_per_s": e.get("throughput_sentences_per_s"),
        }
        for e in result.get("entries", [])
    ]
    return row
