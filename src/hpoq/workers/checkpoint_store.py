"""Checkpoints travel between hosts through the MLflow artifact store.

A trial that leaves a checkpoint uploads it as the `checkpoint/` artifact of its MLflow
run. A benchmark worker uses the local copy when its output directory has one (same host
or a shared volume), and otherwise downloads the run's artifact into its own output
directory, atomically (temporary folder, then rename).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hpoq.errors import HpoqError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ARTIFACT_PATH = "checkpoint"


def upload_checkpoint(client: MlflowClient, run_id: str, checkpoint: Path) -> bool:
    """Upload the trial's checkpoint when it has one; False when there is none."""
    if not checkpoint.is_dir():
        return False
    client.log_artifacts(run_id, str(checkpoint), ARTIFACT_PATH)
    return True


def ensure_local_checkpoint(client: MlflowClient, run_id: str | None, target: Path) -> Path:
    """`target` if it exists, else the run's checkpoint artifact downloaded to `target`."""
    if target.is_dir():
        return target
    if target.exists():
        raise HpoqError(f"checkpoint {target} is not a directory")
    if not run_id:
        raise HpoqError(f"checkpoint {target} is missing and no MLflow run holds a copy")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        try:
            local = client.download_artifacts(run_id, ARTIFACT_PATH, str(staging))
        except Exception as exc:
            raise HpoqError(
                f"checkpoint {target} is missing here and run {run_id} has none to download: {exc}"
            ) from None
        try:
            Path(local).rename(target)
        except OSError:
            if not target.is_dir():  # a concurrent download won the rename: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
