"""Schema of a data config (config/data/*.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hpoq.config.base import SafeName, StrictModel


class SplitPaths(StrictModel):
    """File names of each split, relative to `local_path`."""

    train: str
    validation: str
    test: str

    @field_validator("train", "validation", "test")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value or value.startswith("/") or ".." in value.replace("\\", "/").split("/"):
            raise ValueError("must be a non-empty path relative to local_path, without '..'")
        return value


class SyntheticSpec(StrictModel):
    """When set, the dataset is generated (deterministically) if its files are missing."""

    seed: int = 13
    train_sentences: int = Field(600, ge=10, le=1_000_000)
    validation_sentences: int = Field(150, ge=10, le=1_000_000)
    test_sentences: int = Field(150, ge=10, le=1_000_000)


class DataConfig(StrictModel):
    name: SafeName
    version: str = Field(min_length=1, max_length=64)
    format: Literal["conll", "jsonl"]
    splits: SplitPaths
    labels: list[str] = Field(min_length=1, max_length=10_000)
    synthetic: SyntheticSpec | None = None
    # Where the files live on this machine, relative to the data file (resolved when it is
    # loaded); in a job, the content address of the published files. Never fingerprinted.
    local_path: str

    @field_validator("labels")
    @classmethod
    def _bio_labels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        for label in value:
            if label != "O" and not (label[:2] in ("B-", "I-") and len(label) > 2):
                raise ValueError(f"label {label!r} is not BIO ('O', 'B-TYPE' or 'I-TYPE')")
        return value

    @model_validator(mode="after")
    def _has_outside(self) -> DataConfig:
        if "O" not in self.labels:
            raise ValueError("labels must include 'O'")
        return self

    def fingerprint_payload(self) -> dict[str, object]:
        """Everything that identifies the data, without the machine-specific location."""
        return self.model_dump(mode="json", exclude={"local_path"})
