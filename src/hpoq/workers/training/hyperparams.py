"""The hyperparameters the built-in trainer understands, with defaults for those not searched."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hpoq.errors import InputError


@dataclass(frozen=True)
class HyperParams:
    learning_rate: float = 5e-5
    batch_size: int = 16
    epochs: int = 3
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    dropout: float | None = None  # None keeps the backbone's own dropout

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> HyperParams:
        """Build from sampled values; an unknown name is a typo in the search space, not noise."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(
                f"search_space: the token-classification trainer does not use "
                f"{', '.join(unknown)}; it understands {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = dict(params)
        try:
            for name in ("batch_size", "epochs"):
                if name in values:
                    values[name] = _whole(name, values[name])
            for name in ("learning_rate", "warmup_ratio", "weight_decay", "dropout"):
                if name in values:
                    values[name] = float(values[name])
        except (TypeError, ValueError) as exc:
            raise InputError(f"search_space: {exc}") from None
        result = cls(**values)
        result._validate()
        return result

    def _validate(self) -> None:
        problems = []
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append(f"learning_rate {self.learning_rate} must be positive")
        if self.batch_size < 1:
            problems.append(f"batch_size {self.batch_size} must be at least 1")
        if self.epochs < 1:
            problems.append(f"epochs {self.epochs} must be at least 1")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            problems.append(f"warmup_ratio {self.warmup_ratio} must be in [0, 1]")
        if self.weight_decay < 0:
            problems.append(f"weight_decay {self.weight_decay} must not be negative")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout {self.dropout} must be in [0, 1)")
        if problems:
            raise InputError("search_space: " + "; ".join(problems))


def _whole(name: str, value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)
