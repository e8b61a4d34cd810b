"""Which variant numbers of a backbone already exist anywhere: the study storage, the study
folders on disk, and MLflow's tags. The allocator never issues a number at or below the
highest of them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hpoq.config.tags import TagsRegistry
from hpoq.core.paths import OutputLayout
from hpoq.core.studies import StudyStore
from hpoq.core.variants import find_existing_variants
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


def disk_study_names(layout: OutputLayout, backbone: str) -> list[str]:
    hpo_dir = layout.hpo_dir(backbone)
    if not hpo_dir.is_dir():
        return []
    return [child.name for child in hpo_dir.iterdir() if child.is_dir()]


def mlflow_study_names(
    client: MlflowClient, experiment_name: str, backbone: str, tags: TagsRegistry
) -> list[str]:
    """Distinct study names on the backbone's HPO runs (paged to the end)."""
    from hpoq.core.mlflow_queries import query_runs_by_tags

    found = client.get_experiment_by_name(experiment_name)
    if found is None:
        return []
    runs = query_runs_by_tags(
        client, [str(found.experiment_id)], {tags.process.backbone: backbone}, status=None
    )
    names = {r.data.tags.get(tags.process.study_name, "") for r in runs}
    names.discard("")
    return sorted(names)


def highest_known_variant(
    store: StudyStore,
    backbone: str,
    base: str,
    *,
    mlflow: MlflowClient | None = None,
    experiment_name: str | None = None,
    tags: TagsRegistry | None = None,
) -> int:
    names = set(store.study_names(backbone)) | set(disk_study_names(store.layout, backbone))
    if mlflow is not None and experiment_name and tags is not None:
        try:
            names |= set(mlflow_study_names(mlflow, experiment_name, backbone, tags))
        except Exception as exc:  # MLflow is one of three witnesses; the others still count
            log.warning(
                "MLflow unreachable while seeding variant numbers: %s", redact_url(str(exc))
            )
    return max(find_existing_variants(base, names), default=0)
