"""Schema of the selection config (config/selection.yaml)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from hpoq.config.base import Direction, StrictModel


class SelectionScope(StrEnum):
    OVERALL = "overall"
    PER_VARIANT = "per_variant"


class SelectionObjective(StrictModel):
    metric: str = Field("macro-f1", min_length=1, max_length=250)
    direction: Direction = Direction.MAXIMIZE


class SelectionConfig(StrictModel):
    objective: SelectionObjective = SelectionObjective()
    scope: SelectionScope = SelectionScope.OVERALL
