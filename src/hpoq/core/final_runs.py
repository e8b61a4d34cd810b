"""Final-training runs as MLflow records them, and the variant numbers already in use.

A final run lives in the experiment's final MLflow experiment, tagged stage=final_training,
the backbone, the variant (its number and its name `final_{backbone}[_vN]`), spec_fp,
exec_fp, the seed and the HPO trial it was trained from. Its local folder is
`<output>/<platform>/final/<backbone>/<name>/`. The variant allocator never issues a
number at or below the highest found in MLflow or on disk (coordination/variant_counter.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpoq.config.experiment import Experiment
from hpoq.core.mlflow_queries import metric_value, parse_int_tag, query_runs_by_tags
from hpoq.core.paths import OutputLayout
from hpoq.core.trial_record import STAGE_FINAL_TRAINING
from hpoq.core.variants import final_base_name, find_existing_variants, parse_variant

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
# Metric prefixes of a final run: its scores per split, and the untrained model's on test.
SCORE_PREFIXES = ("train", "validation", "test", "test_untrained")


@dataclass(frozen=True)
class FinalRun:
    backbone: str
    name: str  # final_{backbone}[_vN]
    variant: int
    run_id: str
    status: str  # MLflow's: FINISHED, RUNNING, FAILED, KILLED
    spec_fp: str
    exec_fp: str
    seed: int | None
    source_study_name: str
    source_trial_number: int | None
    source_trial_id: str
    source_run_id: str | None
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "name": self.name,
            "variant": self.variant,
            "run_id": self.run_id,
            "status": self.status,
            "spec_fp": self.spec_fp,
            "exec_fp": self.exec_fp,
            "seed": self.seed,
            "source": {
                "study_name": self.source_study_name,
                "trial_number": self.source_trial_number,
                "trial_id": self.source_trial_id,
                "run_id": self.source_run_id,
            },
            "metrics": self.metrics,
        }


def final_runs(
    client: MlflowClient,
    experiment: Experiment,
    backbone: str | None = None,
    *,
    status: str | None = None,
) -> list[FinalRun]:
    """The experiment's final runs (of `backbone`, with `status`), by backbone and variant."""
    found = client.get_experiment_by_name(experiment.final_experiment_name)
    if found is None:
        return []
    tags = experiment.tags
    required = {tags.process.stage: STAGE_FINAL_TRAINING, tags.process.experiment: experiment.name}
    if backbone is not None:
        required[tags.process.backbone] = backbone
    runs = query_runs_by_tags(client, [str(found.experiment_id)], required, status=status)
    parsed = [r for r in (_parse(run, experiment) for run in runs) if r is not None]
    return sorted(parsed, key=lambda r: (r.backbone, r.variant, r.run_id))


def _parse(run: Run, experiment: Experiment) -> FinalRun | None:
    tags = experiment.tags
    run_tags = run.data.tags
    backbone = run_tags.get(tags.process.backbone, "")
    name = run_tags.get(tags.process.study_name, "")
    variant = parse_variant(final_base_name(backbone), name) if backbone else None
    if variant is None:
        return None  # not a final run this version can read
    ft = tags.final_training
    return FinalRun(
        backbone=backbone,
        name=name,
        variant=variant,
        run_id=str(run.info.run_id),
        status=str(run.info.status),
        spec_fp=run_tags.get(ft.spec_fp, ""),
        exec_fp=run_tags.get(ft.exec_fp, ""),
        seed=parse_int_tag(run, ft.seed),
        source_study_name=run_tags.get(ft.source_study_name, ""),
        source_trial_number=parse_int_tag(run, ft.source_trial_number),
        source_trial_id=run_tags.get(ft.source_trial_id, ""),
        source_run_id=run_tags.get(ft.source_run_id) or None,
        metrics=_scores(run),
    )


def _scores(run: Run) -> dict[str, float]:
    scores = {}
    for name in run.data.metrics:
        if name.split(".", 1)[0] in SCORE_PREFIXES:
            value = metric_value(run, name)
            if value is not None:
                scores[name] = value
    return dict(sorted(scores.items()))


def disk_final_names(layout: OutputLayout, backbone: str) -> list[str]:
    folder = layout.final_dir(backbone)
    if not folder.is_dir():
        return []
    return [child.name for child in folder.iterdir() if child.is_dir()]


def highest_known_final_variant(
    layout: OutputLayout, backbone: str, runs: Iterable[FinalRun]
) -> int:
    """The floor of the variant counter: the highest final variant the disk or `runs` (the
    backbone's final runs, already read from MLflow by the caller) knows."""
    names = set(disk_final_names(layout, backbone)) | {run.name for run in runs}
    return max(find_existing_variants(final_base_name(backbone), names), default=0)


def final_models(
    experiment: Experiment,
    layout: OutputLayout,
    client: MlflowClient,
    backbones: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every finished final model (of `backbones`) with where its checkpoint is: `local_path`
    (this host's folder) and `artifact_uri`/`digest` (the copy published to its run)."""
    from hpoq.core.content_store import CHECKPOINT_ARTIFACT_PATH, digest_tag

    models = []
    for run in final_runs(client, experiment, status="FINISHED"):
        if backbones is not None and run.backbone not in backbones:
            continue
        local = layout.final_variant_dir(run.backbone, run.name) / "checkpoint"
        artifact_uri = digest = None
        try:
            found = client.get_run(run.run_id)
        except Exception as exc:  # MLflow answered the search; the local copy still counts
            log.warning("no checkpoint location for final run %s: %s", run.run_id, exc)
        else:
            digest = found.data.tags.get(digest_tag(CHECKPOINT_ARTIFACT_PATH))
            if digest:
                artifact_uri = f"{found.info.artifact_uri.rstrip('/')}/{CHECKPOINT_ARTIFACT_PATH}"
        checkpoint = {
            "local_path": str(local) if local.is_dir() else None,
            "artifact_uri": artifact_uri,
            "digest": digest,
        }
        models.append(run.to_json() | {"checkpoint": checkpoint})
    return models


def seed_summary(models: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per backbone and spec_fp (one model trained under several seeds): how many seeds, and
    the mean and the sample standard deviation of `test.<metric>` (None with one seed)."""
    import statistics

    groups: dict[tuple[str, str], list[float]] = {}
    for model in models:
        value = model["metrics"].get(f"test.{metric}")
        if value is not None:
            groups.setdefault((model["backbone"], model["spec_fp"]), []).append(float(value))
    return [
        {
            "backbone": backbone,
            "spec_fp": spec_fp,
            "metric": f"test.{metric}",
            "seeds": len(values),
            "mean": statistics.fmean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else None,
        }
        for (backbone, spec_fp), values in sorted(groups.items())
    ]
