"""What the report shows, gathered once: studies, best trials, benchmarks, failures.

Best trials come from `retrieve_best_trials` in the selection's scope (the answer `hpoq
retrieve` gives), the benchmarked trials from `select_candidates` (the keys `hpoq
benchmark` measures) and their results from the disk cache or MLflow
(core/benchmark_results.py), failures from Optuna's FAIL trials with the error their MLflow
run recorded and from the FAILED benchmark runs of keys still unmeasured.

The accuracy-latency points (`TradeoffPoint`) carry a `kind`: a benchmarked best trial of
a search (`best_trial`, scored on the validation split) or a benchmarked final model
(`final_model`, scored on the test split: `test.<metric>` of its final-training run); the
charts draw each kind with its own marker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from hpoq.config.experiment import Experiment
from hpoq.config.selection import SelectionScope
from hpoq.core.benchmark_index import select_candidates
from hpoq.core.benchmark_results import benchmark_row, load_result
from hpoq.core.checkpoint_location import CheckpointLocation, locate_checkpoints
from hpoq.core.failures import FailedRun, failed_runs
from hpoq.core.retrieval import BestTrial, RetrievalResult, mlflow_was_down, retrieve_best_trials
from hpoq.core.runtime import Runtime
from hpoq.core.trial_record import STAGE_BENCHMARK, STAGE_HPO
from hpoq.core.variants import VariantRef, base_study_name

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
PointKind = Literal["best_trial", "final_model"]
NO_ERROR = "no error was recorded in MLflow"


@dataclass(frozen=True)
class VariantStudy:
    ref: VariantRef
    study: optuna.Study
    counts: dict[str, int]  # trials per Optuna state name

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)


@dataclass(frozen=True)
class BackboneData:
    name: str
    variants: list[VariantStudy]
    best: list[BestTrial]  # the retrieval's answer for this backbone (one per variant in
    # per_variant scope)

    def count(self, state: str) -> int:
        return sum(v.counts.get(state, 0) for v in self.variants)


@dataclass(frozen=True)
class TradeoffPoint:
    """One benchmarked model at one (precision, padding, batch size)."""

    kind: PointKind
    backbone: str
    study_name: str
    trial_number: int
    metric: str
    value: float
    precision: str
    padding: str
    batch_size: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    throughput_sentences_per_s: float | None

    @property
    def label(self) -> str:
        return f"{self.backbone} {self.study_name} #{self.trial_number}"


@dataclass(frozen=True)
class Failure:
    what: Literal["trial", "benchmark"]
    backbone: str
    study_name: str
    trial_number: int | None
    error: str
    run_id: str | None = None
    key: str | None = None


@dataclass
class ReportData:
    experiment: Experiment
    generated_at: str
    backbones: list[BackboneData]
    retrieval: RetrievalResult
    checkpoints: dict[str, CheckpointLocation]
    benchmarks: list[dict[str, Any]]
    tradeoff: list[TradeoffPoint]
    failures: list[Failure]
    warnings: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.experiment.selection.objective.metric

    def summary(self) -> dict[str, Any]:
        """The numbers the page shows, as JSON (embedded in the page for tools and tests)."""
        return {
            "experiment": self.experiment.name,
            "generated_at": self.generated_at,
            "metric": self.metric,
            "direction": self.experiment.selection.objective.direction.value,
            "scope": self.retrieval.scope.value,
            "backbones": {
                b.name: {
                    "trials": {state.lower(): b.count(state) for state in STATES},
                    "variants": [
                        {"study_name": v.ref.study_name, "variant": v.ref.variant}
                        | {state.lower(): v.counts.get(state, 0) for state in STATES}
                        for v in b.variants
                    ],
                    "best": [t.model_dump(mode="json") for t in b.best],
                }
                for b in self.backbones
            },
            "missing": self.retrieval.missing,
            "benchmarks": [
                {k: row.get(k) for k in ("backbone", "study_name", "trial", "key", "status")}
                for row in self.benchmarks
            ],
            "failures": len(self.failures),
        }


def collect(experiment: Experiment, runtime: Runtime, client: MlflowClient | None) -> ReportData:
    """Everything the report shows; MLflow being down leaves its parts empty, with a warning."""
    retrieval = retrieve_best_trials(experiment, runtime, client=client)
    mlflow = None if client is None or mlflow_was_down(retrieval) else client
    warnings = list(retrieval.warnings)
    candidates, _, more = select_candidates(experiment, runtime, client=client)
    per_variant = retrieve_best_trials(
        experiment, runtime, scope=SelectionScope.PER_VARIANT, client=client
    )
    values = {t.trial_id: t for t in per_variant.best} | {t.trial_id: t for t in retrieval.best}
    warnings += [w for w in [*more, *per_variant.warnings] if w not in warnings]
    backbones = [
        BackboneData(
            name=b.name,
            variants=_variants(experiment, runtime, b.name),
            best=[t for t in retrieval.best if t.backbone == b.name],
        )
        for b in experiment.hpo.backbones
    ]
    rows = [
        benchmark_row(c.to_json(), load_result(experiment, runtime, mlflow, c.key))
        for c in candidates
    ]
    tradeoff = [
        point
        for candidate, row in zip(candidates, rows, strict=True)
        if candidate.trial_id in values
        for point in _best_points(values[candidate.trial_id], row)
    ]
    if mlflow is not None and experiment.final_training is not None:
        final_rows, final_points = _final_models(experiment, runtime, mlflow)
        rows += final_rows
        tradeoff += final_points
    return ReportData(
        experiment=experiment,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        backbones=backbones,
        retrieval=retrieval,
        checkpoints=locate_checkpoints(retrieval, runtime.layout, mlflow),
        benchmarks=rows,
        tradeoff=tradeoff,
        failures=_failures(experiment, mlflow, backbones, rows),
        warnings=warnings,
    )


def _variants(experiment: Experiment, runtime: Runtime, backbone: str) -> list[VariantStudy]:
    store = runtime.study_store(experiment.hpo.checkpoint)
    base = base_study_name(experiment.hpo.checkpoint.study_name, backbone)
    found = []
    for ref in store.list_variants(backbone, base):
        study = store.load(ref)
        if study is None:
            continue
        trials = study.get_trials(deepcopy=False)
        counts = {state: sum(t.state.name == state for t in trials) for state in STATES}
        found.append(VariantStudy(ref, study, counts))
    return found


def _final_models(
    experiment: Experiment, runtime: Runtime, client: MlflowClient
) -> tuple[list[dict[str, Any]], list[TradeoffPoint]]:
    """The benchmark rows and accuracy-latency points of the finished final models."""
    from hpoq.core.benchmark_index import final_candidate
    from hpoq.core.final_runs import final_runs

    rows: list[dict[str, Any]] = []
    points: list[TradeoffPoint] = []
    metric = f"test.{experiment.selection.objective.metric}"
    try:
        runs = final_runs(client, experiment, status="FINISHED")
    except Exception as exc:  # the rest of the report stands without them
        log.warning("final models not read from MLflow: %s", exc)
        return rows, points
    for run in runs:
        if not run.source_trial_id:
            continue
        candidate = final_candidate(experiment, run)
        row = benchmark_row(
            candidate.to_json(), load_result(experiment, runtime, client, candidate.key)
        )
        rows.append(row)
        value = run.metrics.get(metric)
        if value is not None:
            points += _points(
                row, "final_model", run.backbone, run.name, candidate.trial_number, metric, value
            )
    return rows, points


def _best_points(best: BestTrial, row: dict[str, Any]) -> list[TradeoffPoint]:
    return _points(
        row,
        "best_trial",
        best.backbone,
        best.study_name,
        best.trial_number,
        best.metric,
        best.value,
    )


def _points(
    row: dict[str, Any],
    kind: PointKind,
    backbone: str,
    study_name: str,
    trial_number: int,
    metric: str,
    value: float,
) -> list[TradeoffPoint]:
    return [
        TradeoffPoint(
            kind=kind,
            backbone=backbone,
            study_name=study_name,
            trial_number=trial_number,
            metric=metric,
            value=value,
            precision=str(e["precision"]),
            padding=str(e.get("padding") or "sorted"),
            batch_size=int(e["batch_size"]),
            latency_p50_ms=e["latency_p50_ms"],
            latency_p95_ms=e["latency_p95_ms"],
            latency_p99_ms=e["latency_p99_ms"],
            throughput_sentences_per_s=e.get("throughput_sentences_per_s"),
        )
        for e in row.get("entries", [])
        if e.get("status") == "ok" and e.get("latency_p50_ms") is not None
    ]


def _failures(
    experiment: Experiment,
    client: MlflowClient | None,
    backbones: list[BackboneData],
    rows: list[dict[str, Any]],
) -> list[Failure]:
    """Optuna's FAIL trials (with their run's error), then failed benchmarks not measured."""
    trial_runs: dict[tuple[str | None, int | None], FailedRun] = {}
    bench_runs: list[FailedRun] = []
    if client is not None:
        for run in failed_runs(client, experiment, experiment.hpo_experiment_name, STAGE_HPO):
            trial_runs.setdefault((run.study_name, run.trial_number), run)
        bench_runs = failed_runs(
            client, experiment, experiment.benchmark_experiment_name, STAGE_BENCHMARK
        )
    failures = []
    for backbone in backbones:
        for variant in backbone.variants:
            for trial in variant.trials:
                if trial.state.name != "FAIL":
                    continue
                found = trial_runs.get((variant.ref.study_name, trial.number))
                failures.append(
                    Failure(
                        what="trial",
                        backbone=backbone.name,
                        study_name=variant.ref.study_name,
                        trial_number=trial.number,
                        error=(found and found.error) or NO_ERROR,
                        run_id=found.run_id if found else None,
                    )
                )
    measured = {row["key"] for row in rows if row.get("status") == "measured"}
    latest: dict[str, FailedRun] = {}
    for run in bench_runs:  # oldest first: the latest attempt of each key wins
        if run.key and run.key not in measured:
            latest[run.key] = run
    failures += [
        Failure(
            what="benchmark",
            backbone=run.backbone or "?",
            study_name=run.study_name or "?",
            trial_number=run.trial_number,
            error=run.error or NO_ERROR,
            run_id=run.run_id,
            key=key,
        )
        for key, run in latest.items()
    ]
    return failures
