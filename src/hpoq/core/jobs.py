"""Job specs: immutable, typed values, serialised as JSON in one place.

A job carries the whole resolved experiment, so a worker on another host needs no
config files, and the variant it belongs to, allocated once by the producer, so
retries and redeliveries reuse it. It carries no path of the producer's host: the
experiment comes in its portable form, whose data files and local model directories are
named by content address and fetched by the worker (see hpoq.core.job_inputs).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpoq.config.base import Precision, SafeName
from hpoq.config.experiment import Experiment
from hpoq.core.benchmark_key import build_benchmark_key, parse_benchmark_key
from hpoq.core.fingerprints import FINGERPRINT_LENGTH, final_spec_fingerprint
from hpoq.core.job_inputs import host_paths
from hpoq.core.variants import base_study_name, final_base_name, parse_variant
from hpoq.errors import HpoqError, InputError

QUEUE_HPO = "hpo"
QUEUE_BENCHMARK = "benchmark"
QUEUE_TRAIN = "train"
# Every queue jobs travel on, in the order status shows them.
JOB_QUEUES = (QUEUE_HPO, QUEUE_BENCHMARK, QUEUE_TRAIN)
TASK_RUN_TRIAL = "hpoq.run_trial"
TASK_RUN_BENCHMARK = "hpoq.run_benchmark"
TASK_RUN_FINAL_TRAINING = "hpoq.run_final_training"

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# MLflow run ids and trial ids (fingerprints) become paths, tags and filter values.
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
FINGERPRINT_PATTERN = f"^[0-9a-f]{{{FINGERPRINT_LENGTH}}}$"
ParamValue = str | int | float | bool


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    experiment: Experiment

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @model_validator(mode="after")
    def _no_host_paths(self) -> Self:
        """A path of the producer's host means nothing on a worker's."""
        found = host_paths(self.experiment)
        if found:
            raise ValueError(
                f"experiment.{found[0]} is a path on the producer's host; a job names "
                "files by content address (publish them with hpoq.core.job_inputs)"
            )
        return self

    @model_validator(mode="after")
    def _configured_backbone(self) -> Self:
        """A job only names a backbone of its own experiment (names become paths)."""
        backbone = getattr(self, "backbone", None)
        if backbone is not None and backbone not in {b.name for b in self.experiment.hpo.backbones}:
            raise ValueError("backbone is not one of the experiment's backbones")
        return self


class TrialJob(JobBase):
    """Run one trial of one variant."""

    kind: Literal["trial"] = "trial"
    backbone: SafeName
    study_name: SafeName
    variant: int = Field(ge=1)


class JobInFlight(HpoqError):
    """Raised when another delivery of a job, or another job for its key, is running it."""


def new_job_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def root_job_id(job_id: str) -> str:
    """The job a lineage of replacements started from (`{root}.r{n}` -> `{root}`)."""
    return job_id.split(".", 1)[0]


def replacement_job_id(job_id: str) -> str:
    """The id of the job that replaces `job_id`: `{root}.r1`, then `.r2`, ... The same
    failed job always gets the same replacement id, so sending it twice runs it once."""
    root, _, suffix = job_id.partition(".r")
    number = int(suffix) + 1 if suffix.isdigit() else 1
    return f"{root}.r{number}"


J = TypeVar("J", bound="JobBase")


def parse_job(payload: Any, model: type[J]) -> J:
    """Validate a payload taken off the queue; InputError names what is wrong."""
    if not isinstance(payload, dict):
        raise InputError(f"job payload must be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"malformed {model.__name__} payload; bad fields: {fields}") from None


class BenchmarkJob(JobBase):
    """Measure one best trial under one benchmark key.

    `fence` is the key's fencing number taken when the job was enqueued; a result is only
    published while it is still the key's latest. `force` re-measures a key that already
    has a result (run mode force_new).

    Every field is checked as a trial job's are: names are safe, `study_name` is variant
    `variant` of the backbone's study, and `benchmark_key` parses and is the key that the
    other fields and the experiment build; a job that fails any of this is refused before
    it runs (never recorded as a failed benchmark).
    """

    kind: Literal["benchmark"] = "benchmark"
    backbone: SafeName
    study_name: SafeName
    variant: int = Field(ge=1)
    trial_number: int = Field(ge=0)
    trial_id: str = Field(pattern=RUN_ID_PATTERN)
    run_id: str | None = Field(pattern=RUN_ID_PATTERN)
    benchmark_key: str = Field(min_length=1, max_length=1000)
    fence: int = Field(ge=1)
    force: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        try:
            base = base_study_name(self.experiment.hpo.checkpoint.study_name, self.backbone)
            parse_benchmark_key(self.benchmark_key)
            expected = build_benchmark_key(
                backbone=self.backbone,
                variant=self.study_name,
                run_id=self.run_id,
                trial_id=self.trial_id,
                data=self.experiment.data,
                benchmark=self.experiment.benchmark,
            )
        except InputError as exc:  # pydantic reports ValueErrors with the field path
            raise ValueError(str(exc)) from None
        final_base = final_base_name(self.backbone)
        if self.variant not in (
            parse_variant(base, self.study_name),
            parse_variant(final_base, self.study_name),
        ):
            raise ValueError(
                f"study_name is not variant {self.variant} of {base!r} or {final_base!r}"
            )
        if self.benchmark_key != expected:
            raise ValueError("benchmark_key is not the key of this trial under this experiment")
        return self


class FinalTrainingJob(JobBase):
    """Train one final model: the best trial `source_*` of a backbone, with its
    hyperparameters `params`, under final-training variant `variant` (`study_name`
    `final_{backbone}[_vN]`) and one seed.

    Refused before it runs when the experiment has no final-training config, when a name
    is not the variant it claims to be, or when `spec_fp` is not the fingerprint of this
    backbone, these params, the data and the final-training config (a forged or stale job).
    `exec_fp` is what the producer computed for the seed, precision and its environment.
    """

    kind: Literal["final_training"] = "final_training"
    backbone: SafeName
    study_name: SafeName
    variant: int = Field(ge=1)
    source_study_name: SafeName
    source_variant: int = Field(ge=1)
    source_trial_number: int = Field(ge=0)
    source_trial_id: str = Field(pattern=RUN_ID_PATTERN)
    source_run_id: str | None = Field(pattern=RUN_ID_PATTERN)
    params: dict[str, ParamValue] = Field(max_length=256)
    seed: int = Field(ge=0)
    epochs: int = Field(ge=1)
    precision: Precision
    spec_fp: str = Field(pattern=FINGERPRINT_PATTERN)
    exec_fp: str = Field(pattern=FINGERPRINT_PATTERN)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        final = self.experiment.final_training
        if final is None:
            raise ValueError("the experiment has no final_training config")
        if parse_variant(final_base_name(self.backbone), self.study_name) != self.variant:
            raise ValueError(f"study_name is not final-training variant {self.variant}")
        hpo_base = base_study_name(self.experiment.hpo.checkpoint.study_name, self.backbone)
        if parse_variant(hpo_base, self.source_study_name) != self.source_variant:
            raise ValueError(f"source_study_name is not variant {self.source_variant}")
        try:
            backbone = self.experiment.hpo.backbone(self.backbone)
        except InputError as exc:  # pydantic reports ValueErrors with the field path
            raise ValueError(str(exc)) from None
        expected = final_spec_fingerprint(backbone, self.params, self.experiment.data, final)
        if self.spec_fp != expected:
            raise ValueError("spec_fp is not the fingerprint of this model under this experiment")
        return self
