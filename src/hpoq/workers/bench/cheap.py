"""A torch-free stand-in for the benchmark runner, for orchestration tests.

It reads the JSON checkpoint of the cheap objective (failing clearly when it is missing
or corrupt), sleeps HPOQ_CHEAP_BENCH_SLEEP seconds so tests can kill a worker mid-run,
and returns simulated numbers that are deterministic for a given checkpoint and config.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.settings import load_settings
from hpoq.errors import HpoqError
from hpoq.workers.bench.result import BenchmarkEntry, BenchmarkResult
from hpoq.workers.bench.stats import summarise
from hpoq.workers.objectives.cheap import CHEAP_CHECKPOINT_FILE
from hpoq.workers.training.checkpoints import open_checkpoint_for_reading

SLEEP_ENV = "HPOQ_CHEAP_BENCH_SLEEP"  # Settings.cheap_bench_sleep
TOKENS_PER_SENTENCE = 14  # about what the synthetic sentences hold with [CLS] and [SEP]


def run_inference_benchmark(
    checkpoint_dir: Path,
    data: DataConfig,
    data_dir: Path,
    benchmark: BenchmarkConfig,
    device: str | None = None,
) -> BenchmarkResult:
    """Same signature and result type as the real runner; no model, no data files read."""
    trial_number = _read_checkpoint(checkpoint_dir)
    pause = load_settings().cheap_bench_sleep
    if pause:
        time.sleep(pause)
    entries: list[BenchmarkEntry] = []
    for precision in benchmark.precisions:
        speedup = 2.0 if precision.value == "bf16" else 1.0
        for padding in benchmark.padding:
            # Fixed batches pay for max_seq_length positions per sentence, sorted ones for
            # about what the sentences hold.
            width = benchmark.max_seq_length if padding.value == "fixed" else TOKENS_PER_SENTENCE
            for batch_size in benchmark.batch_sizes:
                seed = f"{trial_number}:{precision.value}:{padding.value}:{batch_size}"
                rng = random.Random(seed)
                base = (0.8 + 0.05 * batch_size * width / TOKENS_PER_SENTENCE) / speedup
                latencies = [base * (1.0 + 0.2 * rng.random()) for _ in range(benchmark.iterations)]
                seconds = sum(latencies) / 1000.0
                sentences = batch_size * benchmark.iterations
                entries.append(
                    BenchmarkEntry(
                        precision=precision,
                        padding=padding,
                        batch_size=batch_size,
                        status="ok",
                        iterations=benchmark.iterations,
                        latency_ms=summarise(latencies),
                        throughput_sentences_per_s=sentences / seconds,
                        throughput_tokens_per_s=sentences * TOKENS_PER_SENTENCE / seconds,
                        peak_memory_mb=None,
                    )
                )
    return BenchmarkResult(
        runner="cheap",
        checkpoint=str(checkpoint_dir),
        device=device or "cpu",
        device_name="simulated",
        torch_version=None,
        transformers_version=None,
        precisions=list(benchmark.precisions),
        memory_kind="none",
        max_seq_length=benchmark.max_seq_length,
        model_parameters=None,
        config=benchmark.fingerprint_payload(),
        entries=entries,
    )


def _read_checkpoint(checkpoint_dir: Path) -> int:
    """The trial number recorded in the checkpoint; HpoqError names what is wrong."""
    path = checkpoint_dir / CHEAP_CHECKPOINT_FILE
    with open_checkpoint_for_reading(checkpoint_dir):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HpoqError(f"checkpoint {checkpoint_dir} has no {CHEAP_CHECKPOINT_FILE}") from None
        except (OSError, ValueError) as exc:
            raise HpoqError(f"checkpoint file {path} is unreadable or corrupt: {exc}") from None
    number = payload.get("trial_number") if isinstance(payload, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        raise HpoqError(f"checkpoint file {path} is corrupt: no integer 'trial_number'")
    return number
