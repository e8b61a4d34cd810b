"""What a benchmark measured: one entry per (precision, padding, batch size), plus the setting."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpoq.config.base import Precision
from hpoq.config.benchmark import BenchmarkPadding

EntryStatus = Literal["ok", "oom"]
# How peak memory was measured: CUDA allocator peak, or not at all (a CPU: peak_memory_mb
# None). "rss_peak_delta" (the growth of the process's peak RSS, a lower bound that stayed
# 0 once an earlier peak was higher) is what results measured before were labelled.
MemoryKind = Literal["cuda_max_allocated", "rss_peak_delta", "none"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencySummary(_Frozen):
    """Milliseconds per batch over the timed iterations."""

    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float


class BenchmarkEntry(_Frozen):
    precision: Precision
    # sorted: real sentences in length-sorted batches, each padded to its longest;
    # fixed: every batch padded to max_seq_length (see config.benchmark.BenchmarkPadding).
    padding: BenchmarkPadding
    batch_size: int = Field(ge=1)
    status: EntryStatus
    iterations: int = Field(ge=0)  # timed batches (warm-up excluded): `iterations` or more
    latency_ms: LatencySummary | None = None
    throughput_sentences_per_s: float | None = None
    throughput_tokens_per_s: float | None = None  # non-pad tokens, special tokens included
    peak_memory_mb: float | None = None
    error: str | None = None  # why a batch size failed (status "oom")


class BenchmarkResult(_Frozen):
    runner: Literal["torch", "cheap"]
    checkpoint: str
    device: str  # "cuda:0", "cpu"
    device_name: str
    torch_version: str | None
    transformers_version: str | None
    precisions: list[Precision]
    memory_kind: MemoryKind
    max_seq_length: int  # the truncation actually used (config, tokenizer and model limits)
    model_parameters: int | None
    config: dict[str, Any]  # BenchmarkConfig.fingerprint_payload(): what was asked for
    entries: list[BenchmarkEntry]

    def entry(
        self,
        precision: Precision | str,
        batch_size: int,
        padding: BenchmarkPadding | str = BenchmarkPadding.SORTED,
    ) -> BenchmarkEntry:
        wanted, shape = Precision(precision), BenchmarkPadding(padding)
        for item in self.entries:
            if item.precision is wanted and item.padding is shape and item.batch_size == batch_size:
                return item
        raise KeyError(
            f"no entry for precision {wanted.value}, padding {shape.value} and batch size "
            f"{batch_size}"
        )
