"""Schema of an HPO config (config/hpo/*.yaml)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hpoq.config.base import (
    Direction,
    Precision,
    RunSection,
    SafeName,
    StrictModel,
    check_safe_name,
)
from hpoq.errors import InputError

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OBJECTIVE_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
MAX_TRIALS = 100_000
BUILTIN_OBJECTIVE = "hpoq.workers.objectives.token_classification:objective"
# What the built-in objective can optimise: entity-level scores on the validation split
# (precision and recall are micro: over all entities pooled).
ENTITY_METRICS = ("micro-f1", "macro-f1", "precision", "recall")


class TinyArchitecture(StrictModel):
    """A small backbone built from a config, with a tokenizer built from the training data."""

    model_type: Literal["bert", "distilbert"] = "bert"
    hidden_size: int = Field(64, ge=8, le=4096)
    num_layers: int = Field(2, ge=1, le=48)
    num_heads: int = Field(2, ge=1, le=64)
    intermediate_size: int = Field(128, ge=8, le=16384)
    max_position_embeddings: int = Field(256, ge=16, le=8192)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> TinyArchitecture:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


def looks_like_path(model: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else with a separator is meant as a path."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


class BackboneConfig(StrictModel):
    """One backbone to search: a safe name plus exactly one source of weights.

    `model` is a Hugging Face id, or a local directory (relative to the HPO file, resolved
    when it is loaded); in a job, a local directory is the content address of its files.
    """

    name: SafeName
    model: str | None = Field(None, description="Hugging Face model id or local directory")
    architecture: TinyArchitecture | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> BackboneConfig:
        if (self.model is None) == (self.architecture is None):
            raise ValueError("set exactly one of 'model' (id or path) and 'architecture'")
        if self.model is not None and not self.model.strip():
            raise ValueError("'model' must not be empty")
        return self


class FloatParam(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("'step' cannot be combined with 'log'")
        return self


class LogParam(StrictModel):
    """Shorthand for a float sampled on a log scale."""

    type: Literal["log"]
    low: float
    high: float

    @model_validator(mode="after")
    def _range(self) -> LogParam:
        _check_range(self.low, self.high, True)
        return self


class IntParam(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("'step' cannot be combined with 'log'")
        return self


class CategoricalParam(StrictModel):
    type: Literal["categorical"]
    choices: list[str | int | float | bool] = Field(min_length=1, max_length=1000)


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("'low' and 'high' must be finite numbers")
    if low > high:  # low == high pins the value (Optuna samples it every time)
        raise ValueError(f"'low' ({low}) must not be above 'high' ({high})")
    if log and low <= 0:
        raise ValueError("'low' must be positive on a log scale")


SearchParam = Annotated[
    FloatParam | LogParam | IntParam | CategoricalParam, Field(discriminator="type")
]


class SamplerConfig(StrictModel):
    type: Literal["tpe", "random"] = "tpe"
    seed: int | None = 42


class PrunerConfig(StrictModel):
    type: Literal["none", "median"] = "median"
    n_startup_trials: int = Field(2, ge=0)
    n_warmup_steps: int = Field(0, ge=0)


class ObjectiveConfig(StrictModel):
    """What a trial optimises. `function` is `module:function`, called with the trial.

    The built-in objective computes the ENTITY_METRICS, so `metric` must name one of them;
    another objective returns its own value and `metric` is only the name it is logged and
    selected under."""

    function: str = BUILTIN_OBJECTIVE
    metric: str = Field("macro-f1", min_length=1, max_length=250)
    direction: Direction = Direction.MAXIMIZE

    @field_validator("function")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        if not _OBJECTIVE_PATH.fullmatch(value):
            raise ValueError("must be a dotted path 'package.module:function'")
        return value

    @field_validator("metric")
    @classmethod
    def _computed_metric(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("function") == BUILTIN_OBJECTIVE and value not in ENTITY_METRICS:
            raise ValueError(
                f"{value!r} is not computed by the built-in objective; choose one of "
                f"{', '.join(ENTITY_METRICS)}"
            )
        return value


class CheckpointConfig(StrictModel):
    enabled: bool = True
    study_name: str = "hpo_{backbone}"
    storage_path: str = "{study_name}/study.journal"
    auto_resume: bool = True
    save_only_best: bool = True

    @field_validator("study_name")
    @classmethod
    def _study_template(cls, value: str) -> str:
        _check_template(value, "{backbone}")
        try:
            check_safe_name(value.replace("{backbone}", "x"))
        except ValueError:
            raise ValueError(
                "must give a safe name once {backbone} is filled in: lower-case letters, "
                "digits, '_' and '-', starting with a letter or digit"
            ) from None
        return value

    @field_validator("storage_path")
    @classmethod
    def _storage_template(cls, value: str) -> str:
        _check_template(value, "{study_name}")
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative path inside the study folder tree")
        if not value.endswith((".journal", ".db")):
            raise ValueError("must end with '.journal' (file journal) or '.db' (SQLite)")
        return value


def _check_template(value: str, placeholder: str) -> None:
    if placeholder not in value:
        raise ValueError(f"must contain {placeholder}")
    leftover = value.replace(placeholder, "")
    if "{" in leftover or "}" in leftover:
        raise ValueError(f"only {placeholder} may be used as a placeholder")


class TrainerConfig(StrictModel):
    """Settings of the built-in token-classification trainer."""

    precision: Precision = Precision.FP32
    max_seq_length: int = Field(128, ge=8, le=8192)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    length_grouping: bool = Field(
        True,
        description="Batch sentences of similar length together (training: random batches "
        "of similar length, evaluation: length-sorted), each padded to its longest sentence.",
    )


class HpoConfig(StrictModel):
    backbones: list[BackboneConfig] = Field(min_length=1, max_length=256)
    n_trials: int = Field(ge=1, le=MAX_TRIALS, strict=True)  # strict: `yes` is not 1
    search_space: dict[str, SearchParam] = Field(min_length=1, max_length=256)
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    trainer: TrainerConfig = TrainerConfig()
    run: RunSection = RunSection()
    checkpoint: CheckpointConfig = CheckpointConfig()
    stale_trial_grace_seconds: int = Field(
        3600, ge=10, description="A RUNNING trial with no live lease for this long is reaped."
    )
    warm_start: Literal["none", "previous_best"] = Field(
        "none",
        description="previous_best: a new variant's first trial re-runs the best parameters "
        "of the latest complete variant.",
    )
    out_of_memory: Literal["fail", "retry_alone"] = Field(
        "fail",
        description="retry_alone: a trial that runs out of accelerator memory on a worker "
        "whose slots share the device runs once more with the device to itself (the same "
        "trial and parameters, after the trials running beside it end); fail: it fails.",
    )
    max_failed_trials: int | None = Field(
        None,
        ge=0,
        le=MAX_TRIALS,
        strict=True,
        description=(
            "Failed trials a variant replaces (default: n_trials); a failure beyond it is "
            "not replaced and the variant finishes with failures."
        ),
    )

    @property
    def failure_bound(self) -> int:
        """How many failed trials the variant replaces."""
        return self.n_trials if self.max_failed_trials is None else self.max_failed_trials

    @field_validator("backbones")
    @classmethod
    def _unique_names(cls, value: list[BackboneConfig]) -> list[BackboneConfig]:
        names = [b.name for b in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"backbone names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _study_names(self) -> HpoConfig:
        """Each backbone's study name is safe, and none reads as a variant of another's."""
        names = {
            b.name: self.checkpoint.study_name.replace("{backbone}", b.name) for b in self.backbones
        }
        for backbone, study in names.items():
            try:
                check_safe_name(study)
            except ValueError as exc:
                raise ValueError(f"backbone {backbone!r}: study name {exc}") from None
        for a, study_a in names.items():
            for b, study_b in names.items():
                if a != b and re.fullmatch(re.escape(study_a) + r"_v[1-9][0-9]*", study_b):
                    raise ValueError(
                        f"backbones {a!r} and {b!r} clash: study {study_b!r} would read as a "
                        f"variant of {study_a!r}; rename one of them"
                    )
        return self

    @field_validator("search_space")
    @classmethod
    def _param_names(cls, value: dict[str, SearchParam]) -> dict[str, SearchParam]:
        for name in value:
            if not _PARAM_NAME.fullmatch(name):
                raise ValueError(f"parameter name {name!r} must be a Python identifier")
        return value

    def backbone(self, name: str) -> BackboneConfig:
        for backbone in self.backbones:
            if backbone.name == name:
                return backbone
        known = ", ".join(b.name for b in self.backbones)
        raise InputError(f"unknown backbone {name!r}; configured: {known}")
