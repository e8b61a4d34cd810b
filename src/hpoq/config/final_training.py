"""Schema of a final-training config (config/final_training/*.yaml): which best trials to
train once more, on what, for how long and under which seeds.

The run mode is read only through hpoq.config.run_mode; a `run.mode` of null inherits the
HPO mode, as a benchmark's does.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from hpoq.config.base import Precision, RunSection, SafeName, StrictModel

MAX_SEEDS = 32
MAX_FINAL_EPOCHS = 1000


class FinalTrainingConfig(StrictModel):
    """`backbones`: None trains every backbone with a best trial. `epochs`: None keeps the
    best trial's. `precision`: None keeps the HPO trainer's. Each seed is one final model
    (several give a mean and a spread)."""

    backbones: list[SafeName] | None = Field(None, min_length=1, max_length=256)
    train_on_validation: bool = True
    epochs: int | None = Field(None, ge=1, le=MAX_FINAL_EPOCHS, strict=True)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)
    precision: Precision | None = None
    run: RunSection = RunSection()

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in seeds):
            raise ValueError("seeds must not be negative")
        return seeds

    def fingerprint_payload(self) -> dict[str, object]:
        """What of this config defines a final model (spec_fp): the data it sees and how long
        it trains. Seeds and precision say how it is executed (exec_fp); backbones and the
        run mode only choose which models to train."""
        return {"train_on_validation": self.train_on_validation, "epochs": self.epochs}
