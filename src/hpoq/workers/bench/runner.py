"""The inference benchmark of one checkpoint on the test split.

For each precision the checkpoint is loaded afresh and cast to it (bf16 weights, not
autocast: what an inference deployment runs), then every padding mode and batch size is
measured with `measure.measure_batch_size`: `sorted` batches of real sentences padded to
their longest, and `fixed` batches padded to the truncation length, each entry labelled
with its mode. torch is imported on the first call only.
"""

from __future__ import annotations

import platform
from pathlib import Path

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.core.datasets import ensure_dataset, read_split
from hpoq.errors import InputError
from hpoq.workers.bench.result import BenchmarkEntry, BenchmarkResult
from hpoq.workers.training.checkpoints import open_checkpoint_for_reading


def run_inference_benchmark(
    checkpoint_dir: Path,
    data: DataConfig,
    data_dir: Path,
    benchmark: BenchmarkConfig,
    device: str | None = None,
) -> BenchmarkResult:
    """Latency, throughput and peak memory per (precision, batch size) on the test split."""
    import torch
    import transformers

    from hpoq.workers.accelerator_memory import release_accelerator_memory
    from hpoq.workers.bench.measure import measure_batch_size
    from hpoq.workers.training.device import resolve_device, torch_dtype
    from hpoq.workers.training.encoding import encode
    from hpoq.workers.training.model_loading import load_checkpoint

    target = resolve_device(device)
    ensure_dataset(data, data_dir)
    sentences = read_split(data, data_dir, "test")
    if not sentences:
        raise InputError(f"data {data.name!r}: the test split has no sentences")
    entries: list[BenchmarkEntry] = []
    max_length = benchmark.max_seq_length
    parameters: int | None = None
    for precision in benchmark.precisions:
        # Held only while files are read: once in memory, the checkpoint may go.
        with open_checkpoint_for_reading(checkpoint_dir):
            loaded = load_checkpoint(checkpoint_dir)
        model = loaded.model.to(device=target, dtype=torch_dtype(precision)).eval()
        parameters = sum(p.numel() for p in model.parameters())
        max_length = min(benchmark.max_seq_length, loaded.max_length)
        encoded = encode(loaded.tokenizer, sentences, None, max_length)
        pad_id = int(loaded.tokenizer.pad_token_id)
        for padding in benchmark.padding:
            for batch_size in benchmark.batch_sizes:
                entries.append(
                    measure_batch_size(
                        model,
                        encoded,
                        pad_id,
                        precision,
                        batch_size,
                        benchmark.warmup_iterations,
                        benchmark.iterations,
                        target,
                        padding=padding,
                        max_length=max_length,
                        min_seconds=benchmark.min_measure_seconds,
                    )
                )
        del model, loaded
        release_accelerator_memory()
    cuda = target.type == "cuda"
    return BenchmarkResult(
        runner="torch",
        checkpoint=str(checkpoint_dir),
        device=str(target),
        device_name=torch.cuda.get_device_name(target) if cuda else _cpu_name(),
        torch_version=str(torch.__version__),
        transformers_version=str(transformers.__version__),
        precisions=list(benchmark.precisions),
        memory_kind="cuda_max_allocated" if cuda else "none",
        max_seq_length=max_length,
        model_parameters=parameters,
        config=benchmark.fingerprint_payload(),
        entries=entries,
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
