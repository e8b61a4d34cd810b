"""Best-trial retrieval: which trial of each backbone (or of each variant) won its search.

Sources, in priority order; for each backbone (per_variant scope: for each variant) the
first source that has a COMPLETE trial answers:

1. MLflow: FINISHED runs in the HPO experiment tagged stage=hpo, the backbone and the
   experiment, with both grouping tags, valid variant and trial-number tags and a finite
   objective metric. Searched on the server: only the best run and its ties are read.
2. Optuna: the COMPLETE trials of every variant study of the backbone (StudyStore).
3. Disk: `<study_dir>/trial_<n>/metrics.json` files whose state is COMPLETE.

Optuna is always consulted (it is cheap, and it is how a disagreement is noticed). Disk is
read only for what neither MLflow nor Optuna answered: the backbone in `overall` scope, the
variants neither knows in `per_variant` scope (listing the study folders is cheap; reading
every metrics.json of a long search is not). When a consulted lower-priority source picks a
different trial (another trial_id, or a value more than 1e-9 away) a warning names both
sources and both trials; the higher-priority source still wins. MLflow being unreachable
is a warning too, never a crash: retrieval goes on with Optuna and disk.

Tie-break rule (one rule, `rank_key`, applied identically to every source): the better
objective value wins (higher for maximize, lower for minimize); among equal values the lower
variant number wins; then the lower trial number. Two records of the same trial (a run
logged twice) are ordered by run id only so that the answer never depends on query order.
Optuna's own `study.best_trial` is never used: its order among ties is not this rule.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from hpoq.config.base import Direction
from hpoq.config.experiment import Experiment
from hpoq.config.selection import SelectionScope
from hpoq.core.fingerprints import trial_key_hash
from hpoq.core.mlflow_queries import (
    find_best_run_by_metric,
    metric_value,
    parse_int_tag,
    quote_identifier,
)
from hpoq.core.optuna_setup import RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.core.trial_record import METRICS_FILE, STAGE_HPO, TrialRecord
from hpoq.core.variants import base_study_name, find_study_variants
from hpoq.errors import InputError
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

SourceName = Literal["mlflow", "optuna", "disk"]
VALUE_TOLERANCE = 1e-9
MLFLOW_UNREACHABLE = "MLflow unreachable"  # how the warning of a failed MLflow source starts
Warn = Callable[[str], None]


class BestTrial(BaseModel):
    """The winning trial of a backbone (or of one of its variants) and where it was found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str
    study_name: str
    variant: int
    trial_number: int
    trial_id: str
    run_id: str | None
    metric: str
    value: float
    source: SourceName


class RetrievalResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: SelectionScope
    best: list[BestTrial]  # sorted by backbone, then variant
    missing: list[str]  # backbones asked for that have no COMPLETE trial in any source
    warnings: list[str]


def mlflow_was_down(result: RetrievalResult) -> bool:
    """Whether MLflow failed during the retrieval (asking it again would only wait)."""
    return any(w.startswith(MLFLOW_UNREACHABLE) for w in result.warnings)


def rank_key(trial: BestTrial, direction: Direction) -> tuple[float, int, int, str]:
    """THE tie-break rule (module docstring): the smallest key is the best trial."""
    signed = -trial.value if direction is Direction.MAXIMIZE else trial.value
    return (signed, trial.variant, trial.trial_number, trial.run_id or "")


def pick_best(trials: Iterable[BestTrial], direction: Direction) -> BestTrial | None:
    return min(trials, key=lambda t: rank_key(t, direction), default=None)


def retrieve_best_trials(
    experiment: Experiment,
    runtime: Runtime,
    scope: SelectionScope | str | None = None,
    backbones: Sequence[str] | None = None,
    client: MlflowClient | None = None,
) -> RetrievalResult:
    """The best trial per backbone (`overall`) or per backbone and variant (`per_variant`).

    `scope` defaults to the experiment's selection scope; `backbones` to every configured
    backbone (an unknown name raises InputError); `client` to one for the runtime's MLflow.
    """
    try:
        chosen_scope = SelectionScope(scope or experiment.selection.scope)
    except ValueError:
        allowed = ", ".join(s.value for s in SelectionScope)
        raise InputError(f"scope: {scope!r} is not one of {allowed}") from None
    names = list(dict.fromkeys(backbones or [b.name for b in experiment.hpo.backbones]))
    for name in names:
        experiment.hpo.backbone(name)  # InputError for a name the experiment does not know
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        logger.warning(message)

    mlflow = _MlflowSource(experiment, runtime, client, warn)
    best: list[BestTrial] = []
    missing: list[str] = []
    for name in names:
        found = _retrieve_backbone(experiment, runtime, mlflow, name, chosen_scope, warn)
        best.extend(found)
        if not found:
            missing.append(name)
    best.sort(key=lambda t: (t.backbone, t.variant))
    return RetrievalResult(
        scope=chosen_scope, best=best, missing=sorted(missing), warnings=warnings
    )


def _retrieve_backbone(
    experiment: Experiment,
    runtime: Runtime,
    mlflow: _MlflowSource,
    backbone: str,
    scope: SelectionScope,
    warn: Warn,
) -> list[BestTrial]:
    answers: list[tuple[SourceName, dict[int, BestTrial]]] = [
        ("mlflow", mlflow.best(backbone, scope)),
        ("optuna", _optuna_best(experiment, runtime, backbone, warn)),
    ]
    answered = {v for _, answer in answers for v in answer}
    if scope is SelectionScope.PER_VARIANT or not answered:
        answers.append(("disk", _disk_best(experiment, runtime, backbone, answered, warn)))
    direction = experiment.selection.objective.direction
    if scope is SelectionScope.OVERALL:
        winner = _first_answer(
            backbone, [pick_best(a.values(), direction) for _, a in answers], warn
        )
        return [winner] if winner else []
    variants = sorted({v for _, answer in answers for v in answer})
    picked = (_first_answer(backbone, [a.get(v) for _, a in answers], warn) for v in variants)
    return [trial for trial in picked if trial is not None]


def _first_answer(backbone: str, answers: list[BestTrial | None], warn: Warn) -> BestTrial | None:
    """The first (highest-priority) answer; a warning for each later one naming another trial."""
    present = [trial for trial in answers if trial is not None]
    if not present:
        return None
    chosen, others = present[0], present[1:]
    for other in others:
        if other.trial_id != chosen.trial_id or abs(other.value - chosen.value) > VALUE_TOLERANCE:
            warn(
                f"{backbone}: sources disagree on the best trial; {chosen.source} picks "
                f"{_describe(chosen)} but {other.source} picks {_describe(other)}; "
                f"using {chosen.source}"
            )
    return chosen


def _describe(trial: BestTrial) -> str:
    return (
        f"trial {trial.trial_number} of {trial.study_name} (variant {trial.variant}, "
        f"trial_id {trial.trial_id}, {trial.metric}={trial.value!r})"
    )


class _MlflowSource:
    """Reads MLflow; after the first failure it is treated as down for the whole retrieval."""

    def __init__(
        self, experiment: Experiment, runtime: Runtime, client: MlflowClient | None, warn: Warn
    ) -> None:
        self._experiment = experiment
        self._runtime = runtime
        self._client = client
        self._warn = warn
        self._down = False
        self._experiment_ids: list[str] | None = None

    def best(self, backbone: str, scope: SelectionScope) -> dict[int, BestTrial]:
        if self._down:
            return {}
        try:
            return self._best(backbone, scope)
        except Exception as exc:  # any client failure: fall back, never crash
            self._down = True
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            self._warn(
                f"{MLFLOW_UNREACHABLE}: {redact_url(self._uri())}: {type(exc).__name__}: "
                f"{redact_url(detail)}; falling back to Optuna and disk"
            )
            return {}

    def _uri(self) -> str:
        if self._client is not None:
            return str(getattr(self._client, "tracking_uri", "(client)"))
        return self._runtime.mlflow_uri()

    def _best(self, backbone: str, scope: SelectionScope) -> dict[int, BestTrial]:
        from hpoq.core.tracking import find_experiment_id, make_client

        if self._client is None:
            self._client = make_client(self._runtime.mlflow_uri())
        if self._experiment_ids is None:
            found = find_experiment_id(self._client, self._experiment.hpo_experiment_name)
            self._experiment_ids = [found] if found is not None else []
        if not self._experiment_ids:
            return {}
        process = self._experiment.tags.process
        required = {
            process.stage: STAGE_HPO,
            process.backbone: backbone,
            process.experiment: self._experiment.name,
        }
        found_variants: dict[int, BestTrial] = {}
        while True:
            # Each search excludes the variants found so far: its winner is the best trial
            # of one more variant (the rule ranks variants before trials), so K variants
            # take K + 1 small ordered searches instead of reading every run.
            variant_tag = quote_identifier(process.variant)
            exclude = " AND ".join(f"tags.{variant_tag} != '{v}'" for v in sorted(found_variants))
            trial = self._search(required, exclude)
            if trial is None:
                return found_variants
            found_variants[trial.variant] = trial
            if scope is SelectionScope.OVERALL:
                return found_variants

    def _search(self, required: dict[str, str], exclude: str) -> BestTrial | None:
        assert self._client is not None
        assert self._experiment_ids is not None
        objective = self._experiment.selection.objective
        run = find_best_run_by_metric(
            self._client,
            self._experiment_ids,
            required,
            objective.metric,
            objective.direction,
            tie_break=lambda r: rank_key(self._trial(r), objective.direction),
            accept=lambda r: self._trial_or_none(r) is not None,
            extra_filter=exclude,
        )
        return None if run is None else self._trial(run)

    def _trial(self, run: Run) -> BestTrial:
        trial = self._trial_or_none(run)
        assert trial is not None  # find_best_run_by_metric only returns accepted runs
        return trial

    def _trial_or_none(self, run: Run) -> BestTrial | None:
        tags = self._experiment.tags
        metric = self._experiment.selection.objective.metric
        variant = parse_int_tag(run, tags.process.variant)
        number = parse_int_tag(run, tags.process.trial_number)
        study = run.data.tags.get(tags.process.study_name)
        trial_id = run.data.tags.get(tags.grouping.trial_key_hash)
        value = metric_value(run, metric)
        if (
            variant is None
            or number is None
            or not study
            or not trial_id
            or not run.data.tags.get(tags.grouping.study_key_hash)
            or value is None
        ):
            return None
        return BestTrial(
            backbone=run.data.tags[tags.process.backbone],
            study_name=study,
            variant=variant,
            trial_number=number,
            trial_id=trial_id,
            run_id=run.info.run_id,
            metric=metric,
            value=value,
            source="mlflow",
        )


def _optuna_best(
    experiment: Experiment, runtime: Runtime, backbone: str, warn: Warn
) -> dict[int, BestTrial]:
    """Best COMPLETE trial of each variant study, by the rule (never study.best_trial)."""
    from optuna.trial import TrialState

    store = runtime.study_store(experiment.hpo.checkpoint)
    base = base_study_name(experiment.hpo.checkpoint.study_name, backbone)
    objective = experiment.selection.objective
    try:
        refs = store.list_variants(backbone, base)
    except Exception as exc:
        warn(f"{backbone}: Optuna storage unreadable: {redact_url(str(exc))[:300]}")
        return {}
    found: dict[int, BestTrial] = {}
    for ref in refs:
        try:
            study = store.load(ref)
            frozen = (
                []
                if study is None
                else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            )
        except Exception as exc:
            warn(f"{backbone}: Optuna study {ref.study_name} unreadable: {exc}"[:400])
            continue
        trials = (
            BestTrial(
                backbone=backbone,
                study_name=ref.study_name,
                variant=ref.variant,
                trial_number=t.number,
                trial_id=trial_key_hash(backbone, ref.study_name, t.number),
                run_id=_run_id(t.user_attrs.get(RUN_ID_ATTR)),
                metric=objective.metric,
                value=t.values[0],
                source="optuna",
            )
            for t in frozen
            if t.values is not None and len(t.values) == 1 and math.isfinite(t.values[0])
        )
        best = pick_best(trials, objective.direction)
        if best is not None:
            found[ref.variant] = best
    return found


def _run_id(value: object) -> str | None:
    """The MLflow run id the worker stored on the trial, if it is a plausible one."""
    return value if isinstance(value, str) and value else None


def _disk_best(
    experiment: Experiment, runtime: Runtime, backbone: str, skip: set[int], warn: Warn
) -> dict[int, BestTrial]:
    """Best COMPLETE trial of each variant folder on disk, leaving out the `skip` variants."""
    hpo_dir = runtime.layout.hpo_dir(backbone)
    if not hpo_dir.is_dir():
        return {}
    base = base_study_name(experiment.hpo.checkpoint.study_name, backbone)
    folders = [child.name for child in hpo_dir.iterdir() if child.is_dir()]
    found: dict[int, BestTrial] = {}
    for ref in find_study_variants(backbone, base, folders):
        if ref.variant in skip:
            continue
        study_dir = runtime.layout.study_dir(backbone, ref.study_name)
        records, rejected = _read_records(sorted(study_dir.glob(f"trial_*/{METRICS_FILE}")))
        if rejected:
            warn(f"{backbone}: {rejected} unreadable {METRICS_FILE} file(s) in {study_dir}")
        objective = experiment.selection.objective
        trials = (
            BestTrial(
                backbone=backbone,
                study_name=ref.study_name,
                variant=ref.variant,
                trial_number=r.trial_number,
                trial_id=r.trial_id,
                run_id=r.run_id,
                metric=r.metric,
                value=r.value,
                source="disk",
            )
            for r in records
            if r.state == "COMPLETE"
            and r.value is not None
            and math.isfinite(r.value)
            and r.metric == objective.metric
            and (r.backbone, r.study_name, r.variant) == (backbone, ref.study_name, ref.variant)
        )
        best = pick_best(trials, objective.direction)
        if best is not None:
            found[ref.variant] = best
    return found


def _read_records(paths: Iterable[Path]) -> tuple[list[TrialRecord], int]:
    """The parsable records among `paths`, and how many could not be read."""
    records: list[TrialRecord] = []
    rejected = 0
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records.append(TrialRecord.from_json(data))
        except (OSError, ValueError, TypeError, ValidationError, AttributeError):
            rejected += 1
    return records, rejected
