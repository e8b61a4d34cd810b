"""Time batches of a loaded model: warm-up, timed iterations, memory peak, OOM as a result.

Per timed batch the clock covers the host-to-device copy and the forward pass, with the
device synchronised before and after on CUDA (kernels run asynchronously); tokenisation
and padding happen outside it. Batches cycle through the test sentences in order.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from hpoq.config.base import Precision
from hpoq.workers.bench.result import BenchmarkEntry
from hpoq.workers.bench.stats import summarise
from hpoq.workers.training.encoding import Encoded, collate


def measure_batch_size(
    model: Any,
    encoded: Sequence[Encoded],
    pad_id: int,
    precision: Precision,
    batch_size: int,
    warmup: int,
    iterations: int,
    device: torch.device,
) -> BenchmarkEntry:
    """One entry; an out-of-memory error becomes status 'oom' instead of an exception."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_mb()
    latencies: list[float] = []
    sentences = tokens = 0
    try:
        batches = _cycled_batches(encoded, batch_size, pad_id)
        for _ in range(warmup):
            _forward(model, next(batches), device)
        if cuda:
            torch.cuda.synchronize(device)
        for _ in range(iterations):
            batch = next(batches)
            sentences += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
            started = time.perf_counter()
            _forward(model, batch, device)
            if cuda:
                torch.cuda.synchronize(device)
            latencies.append((time.perf_counter() - started) * 1000.0)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
        if cuda:
            torch.cuda.empty_cache()
        return BenchmarkEntry(
            precision=precision,
            batch_size=batch_size,
            status="oom",
            iterations=len(latencies),
            error=str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
        )
    seconds = sum(latencies) / 1000.0
    if cuda:
        peak: float | None = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = max(0.0, _peak_rss_mb() - rss_before)
    return BenchmarkEntry(
        precision=precision,
        batch_size=batch_size,
        status="ok",
        iterations=iterations,
        latency_ms=summarise(latencies),
        throughput_sentences_per_s=sentences / seconds if seconds > 0 else None,
        throughput_tokens_per_s=tokens / seconds if seconds > 0 else None,
        peak_memory_mb=peak,
    )


def _forward(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> None:
    """Copy one batch to the device and run the model on it (the unit that is timed)."""
    with torch.inference_mode():
        model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
        )


def _cycled_batches(
    encoded: Sequence[Encoded], batch_size: int, pad_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of consecutive sentences, wrapping around the split."""
    start = 0
    while True:
        items = [encoded[(start + offset) % len(encoded)] for offset in range(batch_size)]
        start = (start + batch_size) % len(encoded)
        yield collate(items, pad_id)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (the platform the workers run on).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
