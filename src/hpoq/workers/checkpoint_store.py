"""Checkpoints travel between hosts through the MLflow artifact store.

A trial that leaves a checkpoint publishes it into its MLflow run by content hash
(`checkpoint/`, its manifest, and the digest tag set last; see hpoq.core.content_store).
On a tracking server the run's artifacts live in the server's artifact root. A benchmark
worker uses the local copy when its output directory has one (the host that trained it,
or one sharing its volume), and otherwise fetches the run's copy into its cache
(`<output>/cache/checkpoints/<digest>`), verified against the digest and renamed into
place in one step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hpoq.core.content_store import CHECKPOINT_ARTIFACT_PATH
from hpoq.errors import ContentError, HpoqError

if TYPE_CHECKING:
    from hpoq.core.content_store import ContentStore

ARTIFACT_PATH = CHECKPOINT_ARTIFACT_PATH


def upload_checkpoint(store: ContentStore, run_id: str, checkpoint: Path) -> str | None:
    """Publish the trial's checkpoint when it has one; its digest, or None when there is none."""
    if not checkpoint.is_dir():
        return None
    return store.publish_to_run(run_id, checkpoint, ARTIFACT_PATH)


def ensure_local_checkpoint(store: ContentStore, run_id: str | None, local: Path) -> Path:
    """`local` if it exists, else the run's published checkpoint in the cache."""
    if local.is_dir():
        return local
    if local.exists():
        raise HpoqError(f"checkpoint {local} is not a directory")
    if not run_id:
        raise HpoqError(f"checkpoint {local} is missing and no MLflow run holds a copy")
    try:
        return store.fetch_from_run("checkpoints", run_id, ARTIFACT_PATH)
    except ContentError as exc:
        raise ContentError(
            f"checkpoint {local} is missing here and run {run_id} has no usable copy: {exc}"
        ) from None
