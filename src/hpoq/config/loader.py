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
from hpoq.config.final_training import FinalTrainingConfig
from hpoq.config.hpo import HpoConfig, looks_like_path
from hpoq.config.selection import SelectionConfig
from hpoq.config.tags import TagsRegistry
from hpoq.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
MAX_CONFIG_BYTES = 1 << 20  # config files are small; refuse anything that is not
# Values once YAML aliases are expanded: far above any config, far below an alias bomb.
MAX_YAML_VALUES = 100_000
MAX_ERRORS_SHOWN = 8
REFERENCED_FILES = ("hpo", "data", "benchmark", "selection", "tags", "final_training")


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, raising ConfigError that names the file on any problem."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a config file")
    try:
        data = _safe_load(path, path.read_text(encoding="utf-8"))
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


def _safe_load(path: Path, text: str) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand past MAX_YAML_VALUES (an
    alias bomb builds gigabytes from a few lines) before anything is built from them."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            values = _expanded_size(node, {}, set())
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply, not a config file") from None
        if values > MAX_YAML_VALUES:
            raise ConfigError(
                f"{path}: YAML aliases expand to more than {MAX_YAML_VALUES} values "
                "(an alias bomb?); not a config file"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` becomes once every alias is copied out (shared nodes counted
    once per use, computed once each)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ConfigError(f"line {node.start_mark.line + 1}: a YAML alias refers to itself")
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, open_nodes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for name, value in node.value:
            size += _expanded_size(name, sizes, open_nodes)
            size += _expanded_size(value, sizes, open_nodes)
    open_nodes.discard(key)
    sizes[key] = size
    return min(size, MAX_YAML_VALUES + 1)


def format_validation_error(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    errors = exc.errors()
    if len(errors) > MAX_ERRORS_SHOWN:
        lines_left = len(errors) - MAX_ERRORS_SHOWN
        errors = errors[:MAX_ERRORS_SHOWN]
    else:
        lines_left = 0
    for error in errors:
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif error["type"] == "missing":
            message = "required field is missing"
        lines.append(f"  {location}: {message}")
    if lines_left:
        lines.append(f"  ... and {lines_left} more")
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


def experiment_files(path: str | Path) -> dict[str, Path]:
    """The experiment file and the files it names, resolved: {"experiment": ..., "hpo":
    ..., "data": ..., "benchmark": ..., "selection": ..., "tags": ... (when set)}."""
    source = Path(path).resolve()
    spec = load_model(source, ExperimentFile)
    return {"experiment": source} | _referenced_files(source, spec)


def _referenced_files(source: Path, spec: ExperimentFile) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for field in REFERENCED_FILES:
        relative = getattr(spec, field)
        if relative is None:
            continue
        resolved = _resolve(source.parent, relative, field, source)
        if resolved == source:
            raise ConfigError(
                f"{source}: {field}: names this experiment file itself (an experiment "
                f"includes itself); name the {field} config file instead"
            )
        if resolved.is_dir():
            raise ConfigError(f"{source}: {field}: {resolved} is a directory, expected a YAML file")
        files[field] = resolved
    return files


def load_experiment(path: str | Path) -> Experiment:
    """Load an experiment file and every file it names. Raises ConfigError.

    Every relative path resolves against the file that names it: the other config files
    against the experiment file, the data's `local_path` against the data file, a local
    `model:` directory against the HPO file."""
    source = Path(path).resolve()
    spec = load_model(source, ExperimentFile)
    files = _referenced_files(source, spec)
    hpo = _resolve_models(load_model(files["hpo"], HpoConfig), files["hpo"].parent)
    data = load_model(files["data"], DataConfig)
    data = data.model_copy(
        update={"local_path": str(_local(files["data"].parent, data.local_path))}
    )
    benchmark = load_model(files["benchmark"], BenchmarkConfig)
    selection = load_model(files["selection"], SelectionConfig)
    tags = load_model(files["tags"], TagsRegistry) if "tags" in files else TagsRegistry()
    final = None
    if "final_training" in files:
        final = load_model(files["final_training"], FinalTrainingConfig)
        _check_final_backbones(files["final_training"], final, hpo)
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
        final_training=final,
        final_experiment_name_override=spec.mlflow.final,
    )


def _check_final_backbones(path: Path, final: FinalTrainingConfig, hpo: HpoConfig) -> None:
    """A final-training file names only backbones the HPO config searches."""
    configured = [b.name for b in hpo.backbones]
    unknown = [name for name in final.backbones or [] if name not in configured]
    if unknown:
        raise ConfigError(
            f"{path}: invalid config\n  backbones: unknown {', '.join(map(repr, unknown))}; "
            f"the HPO config searches {', '.join(configured)}"
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
