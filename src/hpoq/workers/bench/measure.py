"""Time batches of a loaded model: warm-up, timed iterations, memory peak, OOM as a result.

Each entry times at least `iterations` batches and, with `min_seconds`, goes on until the
timed batches add up to that long (a fast batch size gets enough samples for its p99 to be
a tail, not the slowest of a few). Per timed batch the clock covers the host-to-device
copy and the forward pass, with the device synchronised before and after on CUDA (kernels
run asynchronously); tokenisation and padding happen outside it. Every batch holds
`batch_size` test sentences, shaped by the entry's padding (`BenchmarkPadding`): `sorted`
cuts the sentences in length order into batches padded to their longest and visits them
in a fixed shuffled order (so the first iterations are not all short sentences); `fixed`
takes consecutive sentences and pads every batch to the truncation length. Batches cycle
when the iterations outnumber them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from hpoq.config.base import Precision
from hpoq.config.benchmark import BenchmarkPadding
from hpoq.workers.accelerator_memory import is_out_of_memory
from hpoq.workers.bench.result import BenchmarkEntry
from hpoq.workers.bench.stats import summarise
from hpoq.workers.training.encoding import Encoded, collate

BATCH_ORDER_SEED = 0  # the sorted batches' visiting order: the same in every run


def measure_batch_size(
    model: Any,
    encoded: Sequence[Encoded],
    pad_id: int,
    precision: Precision,
    batch_size: int,
    warmup: int,
    iterations: int,
    device: torch.device,
    padding: BenchmarkPadding = BenchmarkPadding.SORTED,
    max_length: int | None = None,
    min_seconds: float = 0.0,
) -> BenchmarkEntry:
    """One entry; an out-of-memory error becomes status 'oom' instead of an exception.
    `max_length` is the width of `fixed` batches (the truncation length). Peak memory is
    the CUDA allocator's; on a CPU it is not measured (None)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    latencies: list[float] = []
    measured_s = 0.0
    sentences = tokens = 0
    try:
        if padding is BenchmarkPadding.FIXED:
            if max_length is None:
                raise ValueError("fixed padding needs max_length")
            batches = _cycled_batches(encoded, batch_size, pad_id, max_length)
        else:
            batches = _sorted_batches(encoded, batch_size, pad_id)
        for _ in range(warmup):
            _forward(model, next(batches), device)
        if cuda:
            torch.cuda.synchronize(device)
        while len(latencies) < iterations or measured_s < min_seconds:
            batch = next(batches)
            sentences += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
            started = time.perf_counter()
            _forward(model, batch, device)
            if cuda:
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - started
            latencies.append(elapsed * 1000.0)
            measured_s += elapsed
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        if cuda:
            torch.cuda.empty_cache()
        return BenchmarkEntry(
            precision=precision,
            padding=padding,
            batch_size=batch_size,
            status="oom",
            iterations=len(latencies),
            error=str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
        )
    seconds = sum(latencies) / 1000.0
    # A CPU has no allocator peak to read: the growth of the process's peak RSS was a lower
    # bound that stayed 0 once an earlier peak was higher, so nothing is reported instead.
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return BenchmarkEntry(
        precision=precision,
        padding=padding,
        batch_size=batch_size,
        status="ok",
        iterations=len(latencies),
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
    encoded: Sequence[Encoded], batch_size: int, pad_id: int, width: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of consecutive sentences padded to `width`, wrapping around the split."""
    start = 0
    while True:
        items = [encoded[(start + offset) % len(encoded)] for offset in range(batch_size)]
        start = (start + batch_size) % len(encoded)
        yield collate(items, pad_id, width)


def _sorted_batches(
    encoded: Sequence[Encoded], batch_size: int, pad_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless full batches of similar-length sentences, each padded to its longest.

    The split, repeated in part when it does not fill a whole number of batches, is sorted
    by length and cut into batches; their order is shuffled once with a fixed seed."""
    count = -(-len(encoded) // batch_size) * batch_size
    members = sorted(
        (i % len(encoded) for i in range(count)), key=lambda i: len(encoded[i].input_ids)
    )
    batches = [members[start : start + batch_size] for start in range(0, count, batch_size)]
    random.Random(BATCH_ORDER_SEED).shuffle(batches)
    while True:
        for batch in batches:
            yield collate([encoded[i] for i in batch], pad_id)
