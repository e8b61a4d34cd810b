"""`hpoq run`: the whole system on one machine, from an experiment file to its results.

Checks its inputs, brings up what is missing (embedded Redis, SQLite MLflow, local
workers), submits the sweep, follows it, makes sure every best trial is benchmarked, and
tears down what it started, on success, failure or a stop signal alike (see
producer/signals.py: a second signal shortens the wait, never the clean-up). In the
default mode a second run finds everything done and starts no worker.

The report says what did not come out: a backbone without a completed trial, a benchmark
that was not measured, each with the first error a worker recorded for it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpoq.config.base import RunMode
from hpoq.config.experiment import Experiment
from hpoq.core.benchmark_dispatch import measured_keys
from hpoq.core.benchmark_index import Candidate, final_candidates, read_cache, select_candidates
from hpoq.core.benchmark_results import benchmark_row, load_result
from hpoq.core.coordination.final_registry import entry_field
from hpoq.core.failures import benchmark_error, first_trial_error
from hpoq.core.final_runs import final_runs
from hpoq.core.final_trainings import planned_finals
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.input_checks import check_inputs
from hpoq.core.optuna_setup import count_finished
from hpoq.core.retrieval import retrieve_best_trials
from hpoq.core.runtime import Runtime
from hpoq.core.variants import VariantRef
from hpoq.errors import HpoqError
from hpoq.producer.benchmark import benchmark_experiment
from hpoq.producer.local_cluster import STOP_GRACE_S, LocalWorkers, default_worker_count
from hpoq.producer.run_events import (
    BenchmarkProgress,
    BenchmarkSettled,
    Observer,
    Started,
    TrialWatch,
)
from hpoq.producer.services import Services, open_services
from hpoq.producer.signals import StopSignals
from hpoq.producer.submit import SubmitResult, Submitter
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)
POLL_S = 0.5
Announce = Callable[[str], None]
NO_ERROR_RECORDED = "no error was recorded in MLflow"


@dataclass
class RunReport:
    experiment: str
    plan: list[SubmitResult]
    best_trials: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    benchmarks: list[dict[str, Any]] = field(default_factory=list)
    trials_enqueued: int = 0
    benchmarks_enqueued: int = 0
    final_enqueued: int = 0
    final_models: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # What did not come out, each with the first recorded worker error and the worker logs.
    failures: list[dict[str, Any]] = field(default_factory=list)
    logs: str | None = None
    stopped: list[dict[str, Any]] = field(default_factory=list)  # variants short of n_trials

    @property
    def new_work(self) -> bool:
        return bool(self.trials_enqueued or self.benchmarks_enqueued or self.final_enqueued)

    @property
    def succeeded(self) -> bool:
        return not self.failures

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
            "final_enqueued": self.final_enqueued,
            "final_models": self.final_models,
            "warnings": self.warnings,
            "failures": self.failures,
            "logs": self.logs,
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
    events: Observer | None = None,
    timeout_s: float | None = None,
    signals: StopSignals | None = None,
    announce: Announce | None = None,
    report_path: str | None = None,
) -> RunReport:
    """Run the experiment to its results. `events` hears what happens as it happens (see
    producer/run_events.py); `signals` (owned by the caller) make a stop signal clean up
    like an error does; `announce` prints what the clean-up waits for; `report_path` is
    where the caller writes the report (told to `events` at the start)."""
    from hpoq.core.tracking import make_client

    # Before anything is written: bad data or a bad model directory stops the run here.
    inputs = check_inputs(experiment, runtime.layout, prepare=True).prepared
    services: Services | None = None
    pool: LocalWorkers | None = None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        hold = signals.deferred() if signals is not None else nullcontext()
        with hold:  # a server started is a server recorded for the clean-up
            services = open_services(runtime, start_embedded=True, owned=True)
        pool = LocalWorkers(
            workers or default_worker_count(), _worker_env(services), runtime.layout.root / "logs"
        )
        if events is not None:
            events(
                Started(
                    outputs=str(runtime.layout.root),
                    worker_logs=str(pool.log_dir),
                    mlflow=redact_url(runtime.mlflow_uri()),
                    report=report_path or "-",
                )
            )
        client = make_client(runtime.mlflow_uri())  # creates the SQLite store under a lock
        plan = Submitter(
            experiment, runtime, services.redis, services.keys, services.celery, mlflow=client
        ).submit(mode_override=mode_override, inputs=inputs)
        report = RunReport(experiment.name, plan, logs=str(pool.log_dir))
        report.trials_enqueued = sum(r.trials_enqueued for r in plan)
        if _incomplete(experiment, runtime, plan):
            _start(pool, signals)
            report.stopped = _wait_for_trials(
                experiment, runtime, services, plan, pool, events, deadline, client
            )
            report.warnings += [
                f"{v['study_name']}: {v['reason']}; first error: {v['first_error']}"
                for v in report.stopped
            ]
        # The best trials' benchmarks, then the final models and theirs.
        stages = [False, True] if experiment.final_training is not None else [False]
        settled: set[str] | None = None  # keys settled before the final models existed
        candidates: list[Candidate] = []
        for final_stage in stages:
            if final_stage:
                settled = {c.key for c in candidates}
                _final_training(
                    experiment, services, pool, signals, report, deadline, mode_override
                )
            dispatched, _, warnings = benchmark_experiment(
                experiment, services, mode_override=mode_override
            )
            report.benchmarks_enqueued += len(dispatched.enqueued)
            report.warnings += [w for w in warnings if w not in report.warnings]
            candidates, _, _ = select_candidates(experiment, runtime, client=client)
            candidates += final_candidates(experiment, client)
            if dispatched.enqueued or dispatched.skipped_in_flight:
                _start(pool, signals)
                _wait_for_benchmarks(
                    experiment, services, candidates, pool, events, deadline, client, settled
                )
        retrieval = retrieve_best_trials(experiment, runtime, client=client)
        report.best_trials = [t.model_dump(mode="json") for t in retrieval.best]
        report.missing = retrieval.missing
        report.benchmarks = [
            _benchmark_row(experiment, runtime, client, c.to_json()) for c in candidates
        ]
        report.failures = _failures(experiment, client, plan, retrieval.missing, candidates, report)
        if experiment.final_training is not None:
            models = final_runs(client, experiment)
            report.final_models = [r.to_json() for r in models if r.status == "FINISHED"]
            report.failures += _final_failures(services, experiment, report)
        return report
    finally:
        if services is not None:
            _shut_down(services, pool, signals, announce)


def _final_training(
    experiment: Experiment,
    services: Services,
    pool: LocalWorkers,
    signals: StopSignals | None,
    report: RunReport,
    deadline: float | None,
    mode_override: str | RunMode | None,
) -> None:
    """Train the final models of the best trials (when there are any) and wait for them."""
    from hpoq.errors import NothingToDo
    from hpoq.producer.final_training import train_final

    try:
        plan = train_final(experiment, services, mode_override=mode_override)
    except NothingToDo as exc:
        report.warnings.append(str(exc))
        return
    report.final_enqueued = len([i for i in plan.items if i.job_id and i.action != "in_flight"])
    report.warnings += plan.warnings
    waiting = [i for i in plan.items if i.job_id]
    if not waiting:
        return
    _start(pool, signals)
    fields = {entry_field(i.backbone, i.spec_fp, i.exec_fp) for i in waiting}
    while True:
        # Over: finished or failed (refused, out of retries) or gone; a `lost` one may be
        # between a transient error and its retry, so it is waited on.
        planned = planned_finals(services.redis, services.keys, fields=fields)
        if all(p.state in ("finished", "failed") for p in planned):
            return
        _check(pool, deadline)
        time.sleep(POLL_S)


def _final_failures(
    services: Services, experiment: Experiment, report: RunReport
) -> list[dict[str, Any]]:
    """Final trainings of this experiment whose latest attempt failed."""
    from hpoq.producer.final_training import failed_final_jobs

    failures = []
    for job, error in failed_final_jobs(services, experiment):
        failures.append(
            {
                "what": "final_training",
                "backbone": job.backbone,
                "study_name": job.study_name,
                "message": (
                    f"{job.backbone}: final training {job.study_name} (seed {job.seed}) failed"
                ),
                "error": error or NO_ERROR_RECORDED,
                "logs": report.logs,
            }
        )
    return failures


def _start(pool: LocalWorkers, signals: StopSignals | None) -> None:
    hold: AbstractContextManager[None] = signals.deferred() if signals else nullcontext()
    with hold:  # every worker started is recorded before a signal is acted on
        pool.start()


def _shut_down(
    services: Services,
    pool: LocalWorkers | None,
    signals: StopSignals | None,
    announce: Announce | None,
) -> None:
    """Stop the workers, then the embedded Redis; a signal from here on only hurries."""
    hurry = signals.begin_cleanup() if signals is not None else None
    running = pool.alive() if pool is not None else 0
    if announce is not None and signals is not None and signals.received:
        what = []
        if running:
            what.append(
                f"{running} worker(s) to finish the job in hand (up to {STOP_GRACE_S:.0f} s)"
            )
        if services.embedded is not None:
            what.append("the embedded Redis to stop")
        waiting = "; waiting for " + " and ".join(what) if what else ""
        announce(f"stopping{waiting}; send the signal again (Ctrl-C) to stop at once")
    try:
        if pool is not None:
            pool.stop(hurry=hurry)
    finally:
        try:
            services.close()
        finally:
            if services.embedded is not None:
                services.embedded.stop(hurry=hurry)


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


def _variant_trials(
    experiment: Experiment, runtime: Runtime, result: SubmitResult
) -> list[FrozenTrial]:
    store = runtime.study_store(experiment.hpo.checkpoint)
    study = store.load(VariantRef(result.backbone, result.variant, result.study_name))
    return [] if study is None else study.get_trials(deepcopy=False)


def _wait_for_trials(
    experiment: Experiment,
    runtime: Runtime,
    services: Services,
    plan: list[SubmitResult],
    pool: LocalWorkers,
    events: Observer | None,
    deadline: float | None,
    client: Any,
) -> list[dict[str, Any]]:
    """Follow the trials until every variant has finished, however it finished; returns
    those that stopped short of n_trials, with the reason and the first worker error."""
    from hpoq.core.coordination.budget import TrialBudget
    from hpoq.core.variant_state import variant_progress

    n = experiment.hpo.n_trials
    objective = experiment.hpo.objective
    budget = TrialBudget(services.redis, services.keys)
    stopped: list[dict[str, Any]] = []
    waiting = list(plan)
    watches = {
        r.study_name: TrialWatch(
            f"{r.backbone} {r.study_name}", n, objective.metric, objective.direction
        )
        for r in plan
    }
    while waiting:
        for result in list(waiting):
            watch = watches[result.study_name]
            trials = _variant_trials(experiment, runtime, result)
            progress, finished = watch.update(trials)
            if events:
                for event in finished:
                    events(event)
                events(progress)
            status = budget.status(
                study_key_hash(result.backbone, result.study_name),
                lost_after_s=experiment.hpo.stale_trial_grace_seconds,
            )
            state = variant_progress(trials, experiment.hpo, status)
            if state.over:
                waiting.remove(result)
                if state.reason:
                    error = first_trial_error(
                        client, experiment, result.backbone, result.study_name
                    )
                    log.warning("%s %s; first error: %s", watch.label, state.reason, error)
                    stopped.append(
                        {"backbone": result.backbone, "study_name": result.study_name}
                        | state.to_json()
                        | {"first_error": error or NO_ERROR_RECORDED}
                    )
        if waiting:
            _check(pool, deadline)
            time.sleep(POLL_S)
    return stopped


def _failures(
    experiment: Experiment,
    client: Any,
    plan: list[SubmitResult],
    missing: list[str],
    candidates: list[Candidate],
    report: RunReport,
) -> list[dict[str, Any]]:
    """A backbone of the plan without a completed trial; a best trial not measured."""
    failures: list[dict[str, Any]] = []
    for result in plan:
        if result.backbone in missing:
            error = first_trial_error(client, experiment, result.backbone, result.study_name)
            failures.append(
                {
                    "what": "trials",
                    "backbone": result.backbone,
                    "study_name": result.study_name,
                    "message": f"{result.backbone}: no completed trial in {result.study_name}",
                    "error": error or NO_ERROR_RECORDED,
                    "logs": report.logs,
                }
            )
    measured = {row["key"] for row in report.benchmarks if row.get("status") == "measured"}
    for candidate in candidates:
        if candidate.key not in measured:
            error = benchmark_error(client, experiment, candidate.key)
            failures.append(
                {
                    "what": "benchmark",
                    "backbone": candidate.backbone,
                    "study_name": candidate.study_name,
                    "key": candidate.key,
                    "message": (
                        f"{candidate.backbone}: benchmark of trial {candidate.trial_number} "
                        f"of {candidate.study_name} not measured"
                    ),
                    "error": error or NO_ERROR_RECORDED,
                    "logs": report.logs,
                }
            )
    return failures


def _wait_for_benchmarks(
    experiment: Experiment,
    services: Services,
    candidates: list[Candidate],
    pool: LocalWorkers,
    events: Observer | None,
    deadline: float | None,
    client: Any,
    seen: set[str] | None = None,
) -> None:
    """Until every candidate's key is measured or failed; `events` hear of each key settled
    after the first look, or after `seen` (keys settled before, when given)."""
    from hpoq.core.coordination.leases import BenchmarkLeases

    leases = BenchmarkLeases(services.redis, services.keys)
    failed_hash = services.keys.failed_benchmarks()
    keys = [c.key for c in candidates]
    while True:
        done = measured_keys(experiment, services.runtime, client, keys)
        failed = {k for k in keys if services.redis.hexists(failed_hash, k)}
        settled = done | {
            k for k, h in zip(keys, leases.holders(keys), strict=True) if k in failed and h is None
        }
        if events:
            progress = BenchmarkProgress(len(settled), len(keys))
            for candidate in candidates:
                if seen is not None and candidate.key in settled - seen:
                    measured = candidate.key in done
                    summary = _summary(services.runtime, candidate.key) if measured else ""
                    events(BenchmarkSettled(_label(candidate), measured, summary, progress))
            events(progress)
        seen = settled
        if len(settled) >= len(keys):
            return
        _check(pool, deadline)
        time.sleep(POLL_S)


def _label(candidate: Candidate) -> str:
    return f"{candidate.backbone} {candidate.study_name} trial {candidate.trial_number}"


def _summary(runtime: Runtime, key: str) -> str:
    """The first entry's latencies, from this host's cache (empty when it has none)."""
    found = read_cache(runtime.layout, key)
    entries = (benchmark_row({}, found).get("entries") or []) if found else []
    ok = [e for e in entries if e["status"] == "ok"]
    if not ok:
        return ""
    e = ok[0]
    return (
        f"{e['precision']} {e['padding']} batch {e['batch_size']}: p50 "
        f"{e['latency_p50_ms']:.2f} ms, p99 {e['latency_p99_ms']:.2f} ms"
    )


def _benchmark_row(
    experiment: Experiment, runtime: Runtime, client: Any, candidate: dict[str, Any]
) -> dict[str, Any]:
    found = load_result(experiment, runtime, client, candidate["key"])
    return benchmark_row(candidate, found)
