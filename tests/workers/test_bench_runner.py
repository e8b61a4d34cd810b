"""The inference benchmark runner on a tiny checkpoint (CPU)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy
import pytest
import torch

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.core.datasets import ensure_dataset
from hpoq.errors import HpoqError
from hpoq.workers.bench import measure
from hpoq.workers.bench.runner import run_inference_benchmark
from hpoq.workers.bench.stats import percentile
from hpoq.workers.training.checkpoints import write_model_files
from hpoq.workers.training.hyperparams import HyperParams
from hpoq.workers.training.trainer import prepare
from tests.workers.ner_fixtures import TINY, synthetic_data

BENCH = BenchmarkConfig(
    batch_sizes=[1, 4],
    warmup_iterations=1,
    iterations=6,
    max_seq_length=32,
    precisions=["fp32", "bf16"],
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DataConfig, Path]:
    """An untrained tiny model saved as a trial checkpoint: speed does not need skill."""
    from hpoq.config.hpo import TrainerConfig

    root = tmp_path_factory.mktemp("bench")
    data = synthetic_data(root / "data", train=40, validation=10, test=12)
    ensure_dataset(data, root / "data")
    run = prepare(TINY, data, root / "data", TrainerConfig(max_seq_length=48), HyperParams(), "cpu")
    target = root / "trial_0" / "checkpoint"
    target.mkdir(parents=True)
    write_model_files(target, run.model, run.tokenizer, run.labels, {"trial_number": 0})
    return target, data, root / "data"


def test_latency_percentiles_and_throughput(checkpoint: tuple[Path, DataConfig, Path]) -> None:
    path, data, data_dir = checkpoint
    result = run_inference_benchmark(path, data, data_dir, BENCH, device="cpu")
    assert [(e.precision.value, e.padding.value, e.batch_size) for e in result.entries] == [
        ("fp32", "sorted", 1),
        ("fp32", "sorted", 4),
        ("fp32", "fixed", 1),
        ("fp32", "fixed", 4),
        ("bf16", "sorted", 1),
        ("bf16", "sorted", 4),
        ("bf16", "fixed", 1),
        ("bf16", "fixed", 4),
    ]
    for entry in result.entries:
        assert entry.status == "ok"
        assert entry.iterations == BENCH.iterations
        assert entry.latency_ms is not None
        latency = entry.latency_ms
        assert 0 < latency.min <= latency.p50 <= latency.p95 <= latency.p99 <= latency.max
        assert entry.throughput_sentences_per_s is not None
        assert entry.throughput_tokens_per_s is not None
        assert entry.throughput_sentences_per_s > 0
        # Every sentence has at least [CLS], one word and [SEP].
        assert entry.throughput_tokens_per_s >= 3 * entry.throughput_sentences_per_s
        assert entry.peak_memory_mb is None  # a CPU has no allocator peak: not measured
    assert result.device == "cpu"
    assert result.memory_kind == "none"
    assert result.torch_version == torch.__version__
    assert result.transformers_version
    assert result.config == BENCH.fingerprint_payload()
    assert result.max_seq_length == 32
    assert result.model_parameters is not None
    assert result.model_parameters > 0
    assert result.entry("bf16", 4).batch_size == 4
    assert result.entry("bf16", 4, "fixed").padding.value == "fixed"


def test_sorted_batches_are_padded_to_their_longest_and_fixed_ones_to_max_length(
    checkpoint: tuple[Path, DataConfig, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each padding mode times: real sentences of similar length (every length of the
    split visited, not only the shortest), or every batch at the truncation length."""
    path, data, data_dir = checkpoint
    real_forward = measure._forward
    shapes: list[tuple[int, int, int, int]] = []  # rows, width, shortest, longest sentence

    def forward(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> None:
        lengths = batch["attention_mask"].sum(dim=1)
        rows, width = batch["input_ids"].shape
        shapes.append((rows, width, int(lengths.min()), int(lengths.max())))
        real_forward(model, batch, device)

    monkeypatch.setattr(measure, "_forward", forward)
    # 12 test sentences in batches of 4: 3 batches, cycled over 1 warm-up + 6 timed.
    config = BenchmarkConfig.model_validate({**BENCH.model_dump(), "precisions": ["fp32"]})
    result = run_inference_benchmark(path, data, data_dir, config, device="cpu")
    per_entry = 1 + BENCH.iterations
    sorted_4 = shapes[per_entry : 2 * per_entry]
    fixed_4 = shapes[3 * per_entry :]
    assert all(rows == 4 for rows, *_ in sorted_4 + fixed_4)
    assert all(width == longest for _, width, _, longest in sorted_4)
    assert all(width == result.max_seq_length for _, width, _, _ in fixed_4)
    assert any(width < result.max_seq_length for _, width, _, _ in sorted_4)
    # Sorted batches hold neighbours in length order and cover the whole range.
    distinct = sorted({(shortest, longest) for _, _, shortest, longest in sorted_4})
    assert len(distinct) == 3
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(distinct))
    # Both count real tokens only (padding is not throughput).
    fixed, tight = result.entry("fp32", 4, "fixed"), result.entry("fp32", 4, "sorted")
    assert fixed.throughput_sentences_per_s and tight.throughput_sentences_per_s
    assert fixed.throughput_tokens_per_s and tight.throughput_tokens_per_s
    per_sentence = [
        e.throughput_tokens_per_s / e.throughput_sentences_per_s for e in (fixed, tight)
    ]
    assert all(value < result.max_seq_length / 2 for value in per_sentence)


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: out of memory"),
    ],
)
def test_an_oom_batch_size_is_recorded_and_the_others_still_run(
    checkpoint: tuple[Path, DataConfig, Path],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    path, data, data_dir = checkpoint
    real_forward = measure._forward

    def forward(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> None:
        if batch["input_ids"].shape[0] == 4:
            raise error
        real_forward(model, batch, device)

    monkeypatch.setattr(measure, "_forward", forward)
    config = BenchmarkConfig.model_validate(
        {
            **BENCH.model_dump(),
            "batch_sizes": [1, 4, 2],
            "precisions": ["fp32"],
            "padding": ["sorted"],
        }
    )
    result = run_inference_benchmark(path, data, data_dir, config, device="cpu")
    assert [e.status for e in result.entries] == ["ok", "oom", "ok"]
    oom = result.entry("fp32", 4)
    assert oom.latency_ms is None
    assert oom.throughput_sentences_per_s is None
    assert oom.error is not None
    assert "out of memory" in oom.error


def test_other_errors_are_not_mistaken_for_oom(
    checkpoint: tuple[Path, DataConfig, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data, data_dir = checkpoint

    def forward(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> None:
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(measure, "_forward", forward)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_inference_benchmark(path, data, data_dir, BENCH, device="cpu")


def test_a_missing_checkpoint_fails_clearly(
    checkpoint: tuple[Path, DataConfig, Path], tmp_path: Path
) -> None:
    _, data, data_dir = checkpoint
    with pytest.raises(HpoqError, match="does not exist"):
        run_inference_benchmark(tmp_path / "trial_3" / "checkpoint", data, data_dir, BENCH, "cpu")


def test_percentile_matches_numpy() -> None:
    rng = random.Random(0)
    for size in (1, 2, 7, 100):
        values = sorted(rng.uniform(0.1, 50.0) for _ in range(size))
        for q in (0, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))
    ties = [1.1] * 5 + [3.3]
    assert percentile(ties, 50) <= percentile(ties, 95) <= percentile(ties, 99)


def test_a_minimum_time_times_more_batches_than_the_count(
    checkpoint: tuple[Path, DataConfig, Path],
) -> None:
    """`min_measure_seconds` keeps timing past `iterations` until the batches add up to it."""
    path, data, data_dir = checkpoint
    config = BenchmarkConfig.model_validate(
        {
            **BENCH.model_dump(),
            "precisions": ["fp32"],
            "padding": ["fixed"],
            "batch_sizes": [1],
            "iterations": 2,
            "min_measure_seconds": 0.3,
        }
    )
    [entry] = run_inference_benchmark(path, data, data_dir, config, device="cpu").entries
    assert entry.latency_ms is not None
    assert entry.iterations > 2
    assert entry.iterations * entry.latency_ms.mean >= 300.0 - 1e-6
