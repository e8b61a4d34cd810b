"""Checks of what an experiment reads, made before anything is written.

`hpoq config validate`, `hpoq submit` and `hpoq run` read every data split the
experiment names with the reader the workers use (`read_split`: the file exists and is a
file, parses, every tag is in `labels`), refuse an empty split, and check that each
local `model:` directory holds a config, a tokenizer and weights. A bad input raises
InputError naming the config file, the field, and the data file and line; the command
exits 2 before any study, folder, MLflow run or Redis key exists.

A split that passed is remembered by the sha256 of its bytes (with the format, the
labels and CHECK_VERSION) under `<output>/cache/data-checks/`, written only once every
check has passed and never by `validate`; a large dataset is parsed once, however often
it is submitted, and any changed byte makes it parsed again.

A synthetic dataset that does not exist yet is the product's own data: `validate` only
says it will be generated (checking its spec, writing nothing); `submit` and `run`
generate it (`prepare=True`) and then check it like any other.

With `prepare=True` the checks end by hashing what the jobs will carry
(`hpoq.core.job_inputs.prepare_inputs`): a file that can be read for checking but not
for publishing (a broken link in a model directory) fails here too, before anything is
remembered, and the caller publishes `report.prepared` without hashing anything again.

Everything here is a function of (DataConfig, data directory) and the backbones, so it
holds wherever the data comes from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hpoq.config.data import DataConfig
from hpoq.config.experiment import Experiment
from hpoq.config.hpo import HpoConfig
from hpoq.core.datasets.readers import SPLITS, SplitName, read_split, split_file, split_path
from hpoq.core.datasets.synthetic import ensure_dataset, needs_generation
from hpoq.core.fingerprints import canonical_json
from hpoq.core.job_inputs import PreparedInputs, prepare_inputs
from hpoq.core.model_source import check_model_dir, local_model_dir
from hpoq.core.paths import OutputLayout
from hpoq.errors import HpoqError, InputError

CHECK_VERSION = 1  # bump when the readers' rules change: earlier verdicts stop counting
CACHE_DIR = ("cache", "data-checks")
_CHUNK = 1 << 20

How = Literal["read", "cached", "to be generated"]


@dataclass(frozen=True)
class SplitCheck:
    split: SplitName
    path: Path
    how: How
    sentences: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "path": str(self.path),
            "how": self.how,
            "sentences": self.sentences,
        }


@dataclass(frozen=True)
class ModelCheck:
    backbone: str
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "path": str(self.path)}


@dataclass
class InputReport:
    """What was checked and where it lies; `to_json` is what `validate` prints."""

    files: dict[str, Path]
    data_dir: Path
    splits: list[SplitCheck] = field(default_factory=list)
    models: list[ModelCheck] = field(default_factory=list)
    prepared: PreparedInputs | None = None  # with prepare=True: the hashed inputs to publish

    def to_json(self) -> dict[str, Any]:
        return {
            "files": {name: str(path) for name, path in self.files.items()},
            "data_dir": str(self.data_dir),
            "splits": [s.to_json() for s in self.splits],
            "models": [m.to_json() for m in self.models],
        }


def check_inputs(
    experiment: Experiment, layout: OutputLayout | None, *, prepare: bool
) -> InputReport:
    """Check the experiment's data splits and local model directories.

    `prepare` (submit, run): generate a missing synthetic dataset first, and remember the
    splits that passed under `layout`. Without it (validate) nothing is written."""
    from hpoq.config.loader import experiment_files

    source = experiment.source
    if source is None:  # a job's copy: its files were checked and published by the producer
        raise HpoqError("input checks need the experiment as loaded from its file")
    files = experiment_files(source)
    report = InputReport(files=files, data_dir=experiment.data_dir())
    data_file = files.get("data", source)
    cache = None if layout is None else layout.root.joinpath(*CACHE_DIR)
    verdicts: dict[Path, tuple[str, int]] = {}
    report.splits = check_data(
        experiment.data,
        report.data_dir,
        source=data_file,
        cache=cache,
        prepare=prepare,
        verdicts=verdicts,
    )
    report.models = check_models(experiment.hpo, files.get("hpo", source))
    if prepare:
        report.prepared = prepare_inputs(experiment)
    if prepare and cache is not None:  # everything passed: remember the splits read
        for key, (path, sentences) in verdicts.items():
            _remember(cache, key, path, sentences)
    return report


def check_data(
    data: DataConfig,
    data_dir: Path,
    *,
    source: Path | str,
    cache: Path | None = None,
    prepare: bool = False,
    verdicts: dict[Path, tuple[str, int]] | None = None,
) -> list[SplitCheck]:
    """Check every split of `data` in `data_dir`; InputError naming `source` and the field.

    `verdicts` collects (cache file -> (split path, sentences)) for splits that were read
    and passed; the caller writes them once everything has passed."""
    where = f"{source}: data {data.name!r}"
    if data_dir.exists() and not data_dir.is_dir():
        raise InputError(f"{where}: local_path: {data_dir} is a file, expected a directory")
    if data.synthetic is None:
        if not data_dir.exists():
            raise InputError(f"{where}: local_path: {data_dir} does not exist")
    else:
        try:
            if prepare:
                ensure_dataset(data, data_dir)
            elif needs_generation(data, data_dir):
                return [
                    SplitCheck(s, split_path(data, data_dir, s), "to be generated") for s in SPLITS
                ]
        except InputError as exc:
            raise InputError(f"{where}: local_path: {_without_data_prefix(str(exc))}") from None
    checks = []
    for split in SPLITS:
        label = f"{where}: splits.{split}"
        try:
            path = split_file(data, data_dir, split)
        except InputError as exc:
            raise InputError(f"{where}: {_without_data_prefix(str(exc))}") from None
        key = _cache_file(cache, data, path, label) if cache is not None else None
        if key is not None and key.is_file():
            checks.append(SplitCheck(split, path, "cached", _cached_sentences(key)))
            continue
        try:
            sentences = len(read_split(data, data_dir, split))
        except InputError as exc:
            raise InputError(f"{label}: {exc}") from None
        except OSError as exc:
            raise InputError(f"{label}: {path} cannot be read: {exc.strerror}") from None
        if sentences == 0:
            raise InputError(f"{label}: {path} holds no sentences")
        checks.append(SplitCheck(split, path, "read", sentences))
        if key is not None and verdicts is not None:
            verdicts[key] = (str(path), sentences)
    return checks


def check_models(hpo: HpoConfig, source: Path | str) -> list[ModelCheck]:
    """Check every backbone whose `model:` is a local directory; hub ids are left alone."""
    checks = []
    for index, backbone in enumerate(hpo.backbones):
        if backbone.model is None:
            continue
        path = local_model_dir(backbone.model)
        if path is None:
            continue
        check_model_dir(path, f"{source}: backbones.{index}.model ({backbone.name})")
        checks.append(ModelCheck(backbone.name, path))
    return checks


def _without_data_prefix(message: str) -> str:
    prefix, sep, rest = message.partition(": ")
    return rest if sep and prefix.startswith("data ") else message


def _cache_file(cache: Path, data: DataConfig, path: Path, label: str) -> Path:
    rules = canonical_json(
        {"version": CHECK_VERSION, "format": data.format, "labels": sorted(data.labels)}
    )
    digest = hashlib.sha256(rules.encode())
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"{label}: {path} cannot be read: {exc.strerror}") from None
    return cache / f"{digest.hexdigest()}.json"


def _cached_sentences(key: Path) -> int | None:
    try:
        value = json.loads(key.read_text()).get("sentences")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _remember(cache: Path, key: Path, path: str, sentences: int) -> None:
    """Best effort: a verdict that cannot be written only costs a re-read next time."""
    from hpoq.core.trial_record import write_json_atomic

    with contextlib.suppress(OSError):
        write_json_atomic(key, {"path": path, "sentences": sentences})
