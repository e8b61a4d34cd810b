"""Jobs carry no host path: the producer publishes data and local models by content, a
worker on another host fetches them into its own cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hpoq.config.settings import Settings
from hpoq.core.content_store import CONTENT_EXPERIMENT, content_address, manifest_of
from hpoq.core.datasets import SPLITS, read_split
from hpoq.core.job_inputs import (
    content_store,
    host_paths,
    local_backbone,
    local_data,
    portable_experiment,
    prepare_inputs,
)
from hpoq.core.jobs import TrialJob, parse_job
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.errors import InputError
from tests.factories import CONLL, make_experiment, seed_mlflow_store, user_experiment


class Host:
    def __init__(self, output: Path, uri: str) -> None:
        self.runtime = Runtime.from_settings(
            Settings(output_dir=output, platform="local", MLFLOW_TRACKING_URI=uri)
        )
        self.client = make_client(uri)
        self.store = content_store(self.runtime, self.client)

    def content_runs(self) -> list[Any]:
        found = self.client.get_experiment_by_name(CONTENT_EXPERIMENT)
        return [] if found is None else list(self.client.search_runs([found.experiment_id]))


@pytest.fixture
def uri(tmp_path: Path, mlflow_template: Path) -> str:
    seed_mlflow_store(mlflow_template, tmp_path / "tracking")
    return f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


def test_a_job_payload_names_files_by_content_and_holds_no_host_path(
    tmp_path: Path, uri: str
) -> None:
    experiment = user_experiment(tmp_path / "producer")
    assert set(host_paths(experiment)) == {"source", "data.local_path", "hpo.backbones.0.model"}
    producer = Host(tmp_path / "producer" / "out", uri)
    portable = portable_experiment(experiment, producer.store)
    assert host_paths(portable) == []

    job = TrialJob(
        job_id="trial-1", experiment=portable, backbone="local", study_name="hpo_local", variant=1
    )
    payload = job.to_payload()
    assert not [s for s in _strings(payload) if str(tmp_path) in s]
    assert payload["experiment"]["source"] is None
    data_files = manifest_of(tmp_path / "producer" / "ner", CONLL, what="data")
    model_files = manifest_of(tmp_path / "producer" / "models" / "tiny", what="model")
    assert payload["experiment"]["data"]["local_path"] == content_address(data_files.digest)
    backbones = payload["experiment"]["hpo"]["backbones"]
    assert backbones[0]["model"] == content_address(model_files.digest)
    assert backbones[1]["model"] == "org/base"  # a hub id is not a host path
    assert parse_job(json.loads(json.dumps(payload)), TrialJob) == job


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("source", "/home/me/exp.yaml", "experiment.source is a path on the producer's host"),
        ("data", "/home/me/ner", "experiment.data.local_path is a path"),
        ("model", "/home/me/models/tiny", "experiment.hpo.backbones.0.model is a path"),
        ("model", "~/models/tiny", "experiment.hpo.backbones.0.model is a path"),
    ],
)
def test_a_payload_with_a_host_path_is_refused(
    tmp_path: Path, uri: str, field: str, value: str, message: str
) -> None:
    portable = portable_experiment(
        user_experiment(tmp_path / "p"), Host(tmp_path / "out", uri).store
    )
    job = TrialJob(
        job_id="trial-1", experiment=portable, backbone="local", study_name="hpo_local", variant=1
    )
    payload = job.to_payload()
    if field == "source":
        payload["experiment"]["source"] = value
    elif field == "data":
        payload["experiment"]["data"]["local_path"] = value
    else:
        payload["experiment"]["hpo"]["backbones"][0]["model"] = value
    with pytest.raises(InputError, match=message):
        parse_job(payload, TrialJob)


def test_building_a_job_from_a_loaded_experiment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="path on the producer's host"):
        TrialJob(
            job_id="trial-1",
            experiment=make_experiment(tmp_path),
            backbone="tiny",
            study_name="hpo_tiny",
            variant=1,
        )


def test_a_worker_gets_the_same_files_in_its_own_cache(tmp_path: Path, uri: str) -> None:
    experiment = user_experiment(tmp_path / "producer")
    portable = portable_experiment(experiment, Host(tmp_path / "producer" / "out", uri).store)
    worker = Host(tmp_path / "worker" / "out", uri)

    data, data_dir = local_data(portable, worker.store)
    cache = worker.runtime.layout.content_cache()
    assert data_dir.parent == cache / "data" and data.local_path == str(data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(CONLL)  # only the splits
    for split in SPLITS:
        assert read_split(data, data_dir, split) == read_split(
            experiment.data, experiment.data_dir(), split
        )
    local = local_backbone(portable, "local", worker.store)
    assert local.model is not None and Path(local.model).parent == cache / "models"
    assert (Path(local.model) / "model.safetensors").read_bytes() == b"\x00" * 4096
    assert local_backbone(portable, "hub", worker.store).model == "org/base"


def test_a_second_submit_of_the_same_files_publishes_nothing(tmp_path: Path, uri: str) -> None:
    experiment = user_experiment(tmp_path / "producer")
    producer = Host(tmp_path / "producer" / "out", uri)
    first = portable_experiment(experiment, producer.store)
    assert len(producer.content_runs()) == 2  # the data and the local model
    assert portable_experiment(experiment, producer.store) == first
    assert portable_experiment(first, producer.store) == first  # a job's experiment: as is
    assert len(producer.content_runs()) == 2
    # Another copy of the same files elsewhere is the same content.
    elsewhere = user_experiment(tmp_path / "other-checkout")
    assert portable_experiment(elsewhere, producer.store) == first
    assert len(producer.content_runs()) == 2
    # One changed byte is new content: only that is published.
    (tmp_path / "producer" / "ner" / "test.conll").write_text("Paris\tB-LOC\n\n")
    changed = portable_experiment(experiment, producer.store)
    assert changed.data.local_path != first.data.local_path
    assert changed.hpo.backbones == first.hpo.backbones
    assert len(producer.content_runs()) == 3


def test_a_synthetic_dataset_is_generated_once_and_published_as_files(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path)
    assert not experiment.data_dir().exists()
    prepared = prepare_inputs(experiment)
    assert prepared.data is not None
    assert set(prepared.data.manifest.files) == {"train.conll", "validation.conll", "test.conll"}
    assert experiment.data_dir().is_dir()


def _missing_split(root: Path) -> None:
    (root / "ner" / "dev.conll").unlink()


def _missing_model_directory(root: Path) -> None:
    shutil.rmtree(root / "models" / "tiny")


def _broken_link_in_model(root: Path) -> None:
    (root / "models" / "tiny" / "vocab.txt").symlink_to(root / "gone")


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        (_missing_split, "dev.conll"),
        (_missing_model_directory, "models/tiny"),
        (_broken_link_in_model, "vocab.txt"),
    ],
)
def test_bad_input_is_refused_naming_the_file_before_anything_is_published(
    tmp_path: Path, breakage: Any, named: str
) -> None:
    experiment = user_experiment(tmp_path / "p")
    breakage(tmp_path / "p")
    with pytest.raises(InputError) as exc:
        prepare_inputs(experiment)  # hashing only: no store is even needed
    assert named in str(exc.value)
