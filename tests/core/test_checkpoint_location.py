"""Where a best trial's checkpoint is: this host's folder and the artifact store's copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpoq.config.settings import Settings
from hpoq.core.checkpoint_location import locate_checkpoint, retrieval_document
from hpoq.core.content_store import CHECKPOINT_ARTIFACT_PATH, digest_tag
from hpoq.core.retrieval import BestTrial, RetrievalResult
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from tests.factories import seed_mlflow_store

DIGEST = "ab" * 32


def _best(run_id: str | None) -> BestTrial:
    return BestTrial(
        backbone="tiny",
        study_name="hpo_tiny",
        variant=1,
        trial_number=3,
        trial_id="t3",
        run_id=run_id,
        metric="macro-f1",
        value=0.9,
        source="mlflow",
    )


class _Down:
    def get_run(self, run_id: str) -> Any:
        raise ConnectionError("MLflow is down")


def test_local_folder_and_published_copy(tmp_path: Path, mlflow_template: Path) -> None:
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    seed_mlflow_store(mlflow_template, tmp_path / "out")
    client = make_client(runtime.mlflow_uri())
    run = client.create_run(client.create_experiment("hpo"))
    client.set_tag(run.info.run_id, digest_tag(CHECKPOINT_ARTIFACT_PATH), DIGEST)

    best = _best(run.info.run_id)
    nowhere = locate_checkpoint(runtime.layout, best, client)
    assert nowhere.local_path is None
    assert nowhere.artifact_uri == f"{run.info.artifact_uri}/checkpoint"
    assert nowhere.digest == DIGEST

    folder = runtime.layout.trial_dir("tiny", "hpo_tiny", 3) / "checkpoint"
    folder.mkdir(parents=True)
    here = locate_checkpoint(runtime.layout, best, _Down())  # type: ignore[arg-type]
    assert here.local_path == str(folder) and here.artifact_uri is None

    unpublished = client.create_run(run.info.experiment_id)
    assert (
        locate_checkpoint(runtime.layout, _best(unpublished.info.run_id), client).artifact_uri
        is None
    )

    result = RetrievalResult(scope="overall", best=[best], missing=[], warnings=[])
    document = retrieval_document(result, {best.trial_id: nowhere})
    assert document["best"][0]["checkpoint"] == {  # type: ignore[index]
        "local_path": None,
        "artifact_uri": nowhere.artifact_uri,
        "digest": DIGEST,
    }
