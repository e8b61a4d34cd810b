"""Shared building blocks for config schemas."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

SAFE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_SAFE_NAME = re.compile(SAFE_NAME_PATTERN)
MAX_NAME_LENGTH = 64


def check_safe_name(value: str) -> str:
    """Accept lower-case ASCII names that are safe as path components and tag values."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters")
    # isascii() first: [a-z] must never admit a unicode look-alike such as Cyrillic U+0430.
    if not value.isascii() or not _SAFE_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a safe name: use lower-case letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    return value


SafeName = Annotated[str, AfterValidator(check_safe_name)]


class StrictModel(BaseModel):
    """Frozen, unknown keys rejected: a typo in a YAML file must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunMode(StrEnum):
    """How a stage treats work that already exists (see run_mode.py for the rules)."""

    REUSE_IF_EXISTS = "reuse_if_exists"
    RESUME_IF_INCOMPLETE = "resume_if_incomplete"
    FORCE_NEW = "force_new"


class RunSection(StrictModel):
    """The `run:` block. Read only through hpoq.config.run_mode."""

    mode: RunMode | None = None


class Direction(StrEnum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
