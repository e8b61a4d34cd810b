"""YAML loading with one readable error per bad file: the file, the field path and what
was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.experiment import Experiment, ExperimentFile
from hpoq.config.hpo import HpoConfig, looks_like_path
from hpoq.config.selection import SelectionConfig
from hpoq.config.tags import TagsRegistry
from hpoq.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
MAX_CONFIG_BYTES = 1 << 20  # config files are small; refuse anything that is not


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, raising ConfigError that names the file on any problem."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def format_validation_error(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif error["type"] == "missing":
            message = "required field is missing"
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def load_model(path: Path, model: type[M]) -> M:
    """Load one YAML file into one schema."""
    data = read_yaml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None


def _resolve(base: Path, relative: str, field: str, source: Path) -> Path:
    if not relative.strip():
        raise ConfigError(f"{source}: invalid config\n  {field}: must name a file")
    return (base / relative).resolve()


def load_experiment(path: str | Path) -> Experiment:
    """Load an experiment file and every file it names. Raises ConfigError.

    Every relative path resolves against the file that names it: the other config files
    against the experiment file, the data's `local_path` against the data file, a local
    `model:` directory against the HPO file."""
    source = Path(path).resolve()
    spec = load_model(source, ExperimentFile)
    base = source.parent
    hpo_file = _resolve(base, spec.hpo, "hpo", source)
    data_file = _resolve(base, spec.data, "data", source)
    hpo = _resolve_models(load_model(hpo_file, HpoConfig), hpo_file.parent)
    data = load_model(data_file, DataConfig)
    data = data.model_copy(update={"local_path": str(_local(data_file.parent, data.local_path))})
    benchmark = load_model(_resolve(base, spec.benchmark, "benchmark", source), BenchmarkConfig)
    selection = load_model(_resolve(base, spec.selection, "selection", source), SelectionConfig)
    tags = (
        load_model(_resolve(base, spec.tags, "tags", source), TagsRegistry)
        if spec.tags
        else TagsRegistry()
    )
    # The Optuna study ranks trials by the HPO objective; selecting by anything else would
    # make the three retrieval sources disagree by construction.
    for field in ("metric", "direction"):
        chosen, searched = getattr(selection.objective, field), getattr(hpo.objective, field)
        if chosen != searched:
            raise ConfigError(
                f"{source}: invalid config\n  selection.objective.{field}: {str(chosen)!r} "
                f"differs from the HPO objective {field} {str(searched)!r}"
            )
    return Experiment(
        name=spec.name,
        source=source,
        hpo=hpo,
        data=data,
        benchmark=benchmark,
        selection=selection,
        tags=tags,
        hpo_experiment_name=spec.mlflow.hpo or f"{spec.name}-hpo",
        benchmark_experiment_name=spec.mlflow.benchmark or f"{spec.name}-benchmark",
    )


def _local(base: Path, value: str) -> Path:
    """`value` as an absolute path: `~` expanded, a relative path taken from `base`."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _resolve_models(hpo: HpoConfig, base: Path) -> HpoConfig:
    """Each `model:` that names a local directory, as an absolute path. A value shaped like
    a path is always one; `name` or `org/name` is one when that directory exists next to
    the HPO file (as transformers would find it), else a Hugging Face id."""
    backbones = []
    for backbone in hpo.backbones:
        model = backbone.model
        if model is not None and (looks_like_path(model) or (base / model).is_dir()):
            backbone = backbone.model_copy(update={"model": str(_local(base, model))})
        backbones.append(backbone)
    return hpo.model_copy(update={"backbones": backbones})
