"""Schema of an experiment file: which HPO, data, benchmark, selection and tags files to use."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hpoq.config.base import SafeName, StrictModel
from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.final_training import FinalTrainingConfig
from hpoq.config.hpo import HpoConfig
from hpoq.config.selection import SelectionConfig
from hpoq.config.tags import TagsRegistry


class MlflowExperiments(StrictModel):
    """MLflow experiment names; None means `{experiment name}-hpo` / `-benchmark` /
    `-final`."""

    hpo: str | None = Field(None, min_length=1, max_length=250)
    benchmark: str | None = Field(None, min_length=1, max_length=250)
    final: str | None = Field(None, min_length=1, max_length=250)


class ExperimentFile(StrictModel):
    """What an experiment YAML holds. Paths are relative to the experiment file."""

    name: SafeName
    hpo: str
    data: str
    benchmark: str
    selection: str
    tags: str | None = None
    final_training: str | None = None
    mlflow: MlflowExperiments = MlflowExperiments()


class Experiment(StrictModel):
    """A fully loaded experiment: every referenced file parsed and validated, and every
    relative path (data `local_path`, a local `model:` directory) resolved against the
    file that names it.

    A job carries it to a worker on another host in its portable form (see
    hpoq.core.job_inputs): no `source`, and the data's `local_path` and each local
    `model` replaced by the content address of the files published to MLflow.
    """

    name: str
    source: Path | None = None  # the experiment file on the machine that loaded it
    hpo: HpoConfig
    data: DataConfig
    benchmark: BenchmarkConfig
    selection: SelectionConfig
    tags: TagsRegistry
    hpo_experiment_name: str
    benchmark_experiment_name: str
    final_training: FinalTrainingConfig | None = None
    final_experiment_name_override: str | None = None

    @property
    def final_experiment_name(self) -> str:
        """The MLflow experiment of the final-training runs."""
        return self.final_experiment_name_override or f"{self.name}-final"

    def data_dir(self) -> Path:
        """The dataset directory on the machine that loaded the experiment."""
        return Path(self.data.local_path)

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json")
