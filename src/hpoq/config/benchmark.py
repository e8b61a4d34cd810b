"""Schema of the benchmark config (config/benchmark.yaml)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from hpoq.config.base import Precision, RunSection, StrictModel


class BenchmarkStrategy(StrEnum):
    BEST_PER_VARIANT = "best_per_variant"
    LATEST_ONLY = "latest_only"


class BenchmarkPadding(StrEnum):
    """How the timed batches are shaped.

    - sorted: the test sentences in length order, cut into batches each padded to its
      longest sentence (what a batch inference job that groups by length runs); the
      batches are visited in a fixed random order, so a short run still sees every length.
    - fixed: consecutive test sentences, every batch padded to `max_seq_length` (a
      deployment with one static input shape; the former worst case).
    """

    SORTED = "sorted"
    FIXED = "fixed"


# The fields that change what a measurement means; only these enter bench_fp.
MEASUREMENT_FIELDS = frozenset(
    {
        "batch_sizes",
        "warmup_iterations",
        "iterations",
        "min_measure_seconds",
        "max_seq_length",
        "precisions",
        "padding",
    }
)


class BenchmarkConfig(StrictModel):
    run: RunSection = RunSection()  # mode null: inherit the HPO mode
    batch_sizes: list[int] = Field([1, 8, 32], min_length=1, max_length=32)
    warmup_iterations: int = Field(10, ge=0, le=10_000)
    # Each entry times at least `iterations` batches and at least `min_measure_seconds` of
    # batches, whichever takes more: with 10 batches p95 and p99 were the slowest batch.
    iterations: int = Field(100, ge=1, le=100_000)
    min_measure_seconds: float = Field(0.0, ge=0.0, le=600.0)
    max_seq_length: int = Field(128, ge=8, le=8192)
    precisions: list[Precision] = Field([Precision.FP32], min_length=1)
    padding: list[BenchmarkPadding] = Field(
        [BenchmarkPadding.SORTED, BenchmarkPadding.FIXED], min_length=1, max_length=2
    )
    benchmark_all_variants: bool = True
    benchmark_strategy: BenchmarkStrategy = BenchmarkStrategy.BEST_PER_VARIANT
    # `module:function` with run_inference_benchmark's signature; the cheap runner serves
    # orchestration tests whose objective leaves no real model behind.
    runner: str = Field(
        "hpoq.workers.bench.runner:run_inference_benchmark",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
    )

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, value: list[int]) -> list[int]:
        if any(b < 1 or b > 65_536 for b in value):
            raise ValueError("batch sizes must be between 1 and 65536")
        if len(set(value)) != len(value):
            raise ValueError("batch sizes must be unique")
        return value

    @field_validator("padding")
    @classmethod
    def _unique_padding(cls, value: list[BenchmarkPadding]) -> list[BenchmarkPadding]:
        if len(set(value)) != len(value):
            raise ValueError("padding modes must be unique")
        return value

    def fingerprint_payload(self) -> dict[str, object]:
        return self.model_dump(mode="json", include=set(MEASUREMENT_FIELDS))
