"""What a job needs from disk, made portable: the producer publishes it by content hash,
each worker fetches it into its own verified cache.

Producer side, in two steps so that bad input fails before anything is written:
`prepare_inputs` hashes the dataset's split files and every local model directory
(InputError naming the file; the only write is generating a synthetic dataset that is
missing, as every run did before), then `publish_inputs` uploads what the artifact store
does not hold yet and returns the experiment as jobs carry it: no `source`, the data's
`local_path` and each local `model` replaced by `sha256:<digest>`. Hub ids stay as they are.

The dataset's files are published even when they were generated from a `synthetic`
spec: a worker then reads the very bytes the producer hashed, whatever Python or
generator version it runs, and there is one path for every dataset.

Worker side: `local_data` and `local_backbone` turn those addresses back into folders
of the worker's cache (`<output>/cache/{data,models}/<digest>`), downloading them once
per host; the objective and the benchmark runner get a DataConfig and a BackboneConfig
whose paths are local, exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hpoq.config.data import DataConfig
from hpoq.config.experiment import Experiment
from hpoq.config.hpo import BackboneConfig, looks_like_path
from hpoq.core.content_store import (
    CONTENT_EXPERIMENT,
    ContentStore,
    Manifest,
    content_address,
    is_content_address,
    manifest_of,
    parse_address,
)
from hpoq.errors import ContentError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from hpoq.core.runtime import Runtime


def host_paths(experiment: Experiment) -> list[str]:
    """The fields of `experiment` that name a path on the host that loaded it (a job
    must carry none)."""
    found = []
    if experiment.source is not None:
        found.append("source")
    if not is_content_address(experiment.data.local_path):
        found.append("data.local_path")
    for index, backbone in enumerate(experiment.hpo.backbones):
        model = backbone.model
        if model is not None and not is_content_address(model) and looks_like_path(model):
            found.append(f"hpo.backbones.{index}.model")
    return found


def is_portable(experiment: Experiment) -> bool:
    return not host_paths(experiment)


@dataclass(frozen=True)
class LocalTree:
    """A folder on the producer and the manifest of the files to publish from it."""

    root: Path
    manifest: Manifest
    label: str


@dataclass(frozen=True)
class PreparedInputs:
    experiment: Experiment
    data: LocalTree | None = None  # None: the experiment is portable already
    models: dict[str, LocalTree] = field(default_factory=dict)  # backbone -> its directory


def prepare_inputs(experiment: Experiment) -> PreparedInputs:
    """Hash what the jobs will need; InputError names the file that cannot be read."""
    from hpoq.core.datasets import SPLITS, ensure_dataset, split_path

    if is_portable(experiment):
        return PreparedInputs(experiment)
    data = experiment.data
    data_dir = experiment.data_dir()
    ensure_dataset(data, data_dir)
    names = [split_path(data, data_dir, split).relative_to(data_dir).as_posix() for split in SPLITS]
    prepared_data = LocalTree(
        data_dir,
        manifest_of(data_dir, names, what=f"data {data.name!r}"),
        f"{data.name} {data.version}",
    )
    models = {}
    for backbone in experiment.hpo.backbones:
        model = backbone.model
        if model is None or is_content_address(model) or not looks_like_path(model):
            continue
        root = Path(model)
        what = f"backbone {backbone.name!r}: model"
        models[backbone.name] = LocalTree(root, manifest_of(root, what=what), backbone.name)
    return PreparedInputs(experiment, prepared_data, models)


def publish_inputs(prepared: PreparedInputs, store: ContentStore) -> Experiment:
    """Upload what the store lacks; the experiment with content addresses for host paths."""
    experiment = prepared.experiment
    if prepared.data is None:
        return experiment
    tree = prepared.data
    store.publish("data", tree.root, tree.manifest, tree.label)
    backbones = []
    for backbone in experiment.hpo.backbones:
        model_tree = prepared.models.get(backbone.name)
        if model_tree is not None:
            store.publish("models", model_tree.root, model_tree.manifest, model_tree.label)
            address = content_address(model_tree.manifest.digest)
            backbone = backbone.model_copy(update={"model": address})
        backbones.append(backbone)
    data = experiment.data.model_copy(update={"local_path": content_address(tree.manifest.digest)})
    hpo = experiment.hpo.model_copy(update={"backbones": backbones})
    return experiment.model_copy(update={"source": None, "data": data, "hpo": hpo})


def portable_experiment(experiment: Experiment, store: ContentStore) -> Experiment:
    """prepare_inputs then publish_inputs; an experiment that is portable comes back as is."""
    return publish_inputs(prepare_inputs(experiment), store)


def content_store(
    runtime: Runtime, client: MlflowClient, experiment_id: Callable[[], str] | None = None
) -> ContentStore:
    """The store for this process: MLflow `client`, the cache under the output directory.
    `experiment_id` (a worker passes its cached lookup) finds the `hpoq-content` experiment."""
    if experiment_id is None:
        from hpoq.core.tracking import artifact_root, ensure_experiment

        location = artifact_root(runtime.layout, runtime.mlflow_uri())
        experiment_id = functools.cache(
            lambda: ensure_experiment(client, CONTENT_EXPERIMENT, location)
        )
    return ContentStore(client, experiment_id, runtime.layout.content_cache())


def local_data(experiment: Experiment, store: ContentStore) -> tuple[DataConfig, Path]:
    """The data config with a local `local_path`, and that folder (fetched when needed)."""
    data = experiment.data
    digest = parse_address(data.local_path)
    if digest is None:
        return data, experiment.data_dir()
    try:
        folder = store.fetch("data", digest)
    except ContentError as exc:
        raise ContentError(f"data {data.name!r}: {exc}") from None
    return data.model_copy(update={"local_path": str(folder)}), folder


def local_backbone(experiment: Experiment, name: str, store: ContentStore) -> BackboneConfig:
    """Backbone `name` with a local `model` directory (fetched when needed)."""
    backbone = experiment.hpo.backbone(name)
    digest = parse_address(backbone.model)
    if digest is None:
        return backbone
    try:
        folder = store.fetch("models", digest)
    except ContentError as exc:
        raise ContentError(f"backbone {name!r}: model {exc}") from None
    return backbone.model_copy(update={"model": str(folder)})
