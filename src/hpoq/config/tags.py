"""The tags registry (config/tags.yaml): logical keys mapped to MLflow tag names."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from hpoq.config.base import StrictModel

_TAG_NAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,250}$")
BENCHMARK_KEY_TAG = "benchmark_key"


def _check_tag(value: str) -> str:
    if not _TAG_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid MLflow tag name")
    return value


TagName = Annotated[str, AfterValidator(_check_tag)]


class GroupingTags(StrictModel):
    study_key_hash: TagName = "hpoq.study_key_hash"
    trial_key_hash: TagName = "hpoq.trial_key_hash"


class ProcessTags(StrictModel):
    backbone: TagName = "hpoq.backbone"
    variant: TagName = "hpoq.variant"
    study_name: TagName = "hpoq.study_name"
    stage: TagName = "hpoq.stage"
    trial_number: TagName = "hpoq.trial_number"
    experiment: TagName = "hpoq.experiment"


class BenchmarkTags(StrictModel):
    # The contract fixes this name: other tools look runs up by it.
    key: Literal["benchmark_key"] = "benchmark_key"
    fencing_token: TagName = "hpoq.fencing_token"
    error: TagName = "hpoq.error"


class FinalTrainingTags(StrictModel):
    """A final-training run: its fingerprints, seed and the HPO trial it was made from."""

    spec_fp: TagName = "hpoq.spec_fp"
    exec_fp: TagName = "hpoq.exec_fp"
    seed: TagName = "hpoq.seed"
    source_run_id: TagName = "hpoq.source_run_id"
    source_study_name: TagName = "hpoq.source_study_name"
    source_trial_number: TagName = "hpoq.source_trial_number"
    source_trial_id: TagName = "hpoq.source_trial_id"
    error: TagName = "hpoq.error"  # why a FAILED final run failed


class TagsRegistry(StrictModel):
    grouping: GroupingTags = Field(default_factory=GroupingTags)
    process: ProcessTags = Field(default_factory=ProcessTags)
    benchmark: BenchmarkTags = Field(default_factory=BenchmarkTags)
    final_training: FinalTrainingTags = Field(default_factory=FinalTrainingTags)

    def key(self, section: str, name: str) -> str:
        """Tag name for a logical key such as ('grouping', 'study_key_hash')."""
        group = getattr(self, section, None)
        if not isinstance(group, StrictModel) or name not in type(group).model_fields:
            raise KeyError(f"unknown tag key {section}.{name}")
        value = getattr(group, name)
        assert isinstance(value, str)
        return value
