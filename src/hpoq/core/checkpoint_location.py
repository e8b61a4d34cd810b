"""Where a best trial's checkpoint can be had: on this host's disk, in the artifact store.

A trial that kept a checkpoint (`checkpoint.save_only_best` keeps only the best one of a
variant) leaves it at `<study_dir>/trial_<n>/checkpoint/` on the worker's host and
publishes it into its MLflow run (`checkpoint/`, tag `hpoq.digest.checkpoint` set last;
see core/content_store.py). `locate_checkpoints` adds both to a retrieval's best trials:
the local path when this host has the folder, the artifact URI when the run holds a
complete copy. Reading the run's tags is one MLflow call per best trial; MLflow being
unreachable leaves `artifact_uri` empty, never an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from hpoq.core.content_store import CHECKPOINT_ARTIFACT_PATH, digest_tag
from hpoq.core.paths import OutputLayout
from hpoq.core.retrieval import BestTrial, RetrievalResult

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
LOCAL_DIR_NAME = "checkpoint"  # the folder a worker saves a trial's checkpoint into


class CheckpointLocation(BaseModel):
    """Where the checkpoint of one trial is; both None when no copy is known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    local_path: str | None  # a folder on this host
    artifact_uri: str | None  # the published copy in the MLflow artifact store
    digest: str | None  # its content digest (the manifest's), when published


def local_checkpoint_dir(layout: OutputLayout, trial: BestTrial) -> Path:
    return layout.trial_dir(trial.backbone, trial.study_name, trial.trial_number) / LOCAL_DIR_NAME


def locate_checkpoint(
    layout: OutputLayout, trial: BestTrial, client: MlflowClient | None
) -> CheckpointLocation:
    local = local_checkpoint_dir(layout, trial)
    artifact_uri = digest = None
    if client is not None and trial.run_id:
        try:
            run = client.get_run(trial.run_id)
        except Exception as exc:  # MLflow down, run deleted: the local copy still counts
            log.warning("no checkpoint location from MLflow for run %s: %s", trial.run_id, exc)
        else:
            digest = run.data.tags.get(digest_tag(CHECKPOINT_ARTIFACT_PATH))
            if digest:
                artifact_uri = f"{run.info.artifact_uri.rstrip('/')}/{CHECKPOINT_ARTIFACT_PATH}"
    return CheckpointLocation(
        local_path=str(local) if local.is_dir() else None,
        artifact_uri=artifact_uri,
        digest=digest or None,
    )


def locate_checkpoints(
    result: RetrievalResult, layout: OutputLayout, client: MlflowClient | None
) -> dict[str, CheckpointLocation]:
    """trial_id -> where its checkpoint is, for every best trial of `result`."""
    return {t.trial_id: locate_checkpoint(layout, t, client) for t in result.best}


def retrieval_document(
    result: RetrievalResult, checkpoints: dict[str, CheckpointLocation]
) -> dict[str, object]:
    """`hpoq retrieve --json`: the retrieval, each best trial with its `checkpoint`."""
    document = result.model_dump(mode="json")
    for row, trial in zip(document["best"], result.best, strict=True):
        found = checkpoints.get(trial.trial_id)
        row["checkpoint"] = None if found is None else found.model_dump(mode="json")
    return document
