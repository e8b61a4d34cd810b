"""One finished trial as all three record keepers store it (MLflow, Optuna, disk).

The worker writes a TrialRecord to MLflow (tags below) and to
`<study_dir>/trial_<n>/metrics.json`; retrieval reads it back from either.

MLflow run of a trial, in the experiment's HPO experiment:
- tags: process.stage=hpo, process.backbone, process.variant (the number, as text),
  process.study_name, process.trial_number, process.experiment,
  grouping.study_key_hash, grouping.trial_key_hash
- params: the sampled hyperparameters; metric: the objective metric (final value)
- status: FINISHED for a COMPLETE trial, KILLED for PRUNED, FAILED for FAIL
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from hpoq.config.tags import TagsRegistry
from hpoq.core.fingerprints import study_key_hash, trial_key_hash

STAGE_HPO = "hpo"
STAGE_BENCHMARK = "benchmark"  # a benchmark's run, in the benchmark experiment
STAGE_FINAL_TRAINING = "final_training"  # a final model's run, in the final experiment
STAGE_REPORT = "report"  # the run holding an experiment's HTML report, in the HPO experiment
METRICS_FILE = "metrics.json"
TrialStateName = Literal["COMPLETE", "PRUNED", "FAIL"]
MLFLOW_STATUS: dict[str, str] = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


class TrialRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str
    backbone: str
    study_name: str
    variant: int
    trial_number: int
    state: TrialStateName
    metric: str
    value: float | None
    params: dict[str, Any]
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    run_id: str | None = None

    @property
    def trial_id(self) -> str:
        return trial_key_hash(self.backbone, self.study_name, self.trial_number)

    @property
    def study_key(self) -> str:
        return study_key_hash(self.backbone, self.study_name)

    def mlflow_tags(self, tags: TagsRegistry) -> dict[str, str]:
        return {
            tags.process.stage: STAGE_HPO,
            tags.process.backbone: self.backbone,
            tags.process.variant: str(self.variant),
            tags.process.study_name: self.study_name,
            tags.process.trial_number: str(self.trial_number),
            tags.process.experiment: self.experiment,
            tags.grouping.study_key_hash: self.study_key,
            tags.grouping.trial_key_hash: self.trial_id,
        }

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["trial_id"] = self.trial_id
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        payload = {k: v for k, v in data.items() if k != "trial_id"}
        return cls.model_validate(payload)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_metrics_file(trial_dir: Path, record: TrialRecord) -> Path:
    path = trial_dir / METRICS_FILE
    write_json_atomic(path, record.to_json())
    return path
