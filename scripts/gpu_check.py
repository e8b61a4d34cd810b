#!/usr/bin/env python
"""Run one real trial and one benchmark on this machine's accelerator and print the figures.

    python scripts/gpu_check.py                    # fp32 and bf16 side by side
    python scripts/gpu_check.py --precision bf16   # one precision only

Uses the synthetic dataset and a small BERT built from config (nothing is downloaded).
On a machine without CUDA it runs on the CPU with smaller sizes and says so. While it
runs, a background thread samples `nvidia-smi` for GPU utilisation and memory. Human
readable lines go to stderr; the last line on stdout is one JSON document with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.hpo import HpoConfig
from hpoq.core.objective import TrialContext
from hpoq.workers.bench.result import BenchmarkEntry
from hpoq.workers.bench.runner import run_inference_benchmark
from hpoq.workers.objectives.token_classification import objective

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]


@dataclass(frozen=True)
class Sizes:
    hidden_size: int
    layers: int
    train_sentences: int
    epochs: int
    learning_rate: float
    batch_size: int
    iterations: int  # timed batches per batch size
    batch_sizes: tuple[int, ...]


GPU_SIZES = Sizes(512, 4, 8000, 3, 1e-3, 64, 30, (1, 8, 32, 128, 512))
CPU_SIZES = Sizes(64, 2, 400, 3, 5e-3, 16, 5, (1, 8, 32))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class GpuSampler:
    """Samples `nvidia-smi` every `interval` seconds, tagging each sample with the phase."""

    gpu_index: str
    interval: float = 1.0
    phase: str = "idle"
    samples: list[tuple[str, float, float]] = field(default_factory=list)  # phase, %, MiB
    available: bool = field(default_factory=lambda: shutil.which("nvidia-smi") is not None)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        query = "--query-gpu=utilization.gpu,memory.used"
        command = ["nvidia-smi", f"--id={self.gpu_index}", query, "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
                util, memory = (float(x) for x in out.strip().splitlines()[0].split(","))
                self.samples.append((self.phase, util, memory))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass  # a missed sample is not worth stopping the check for
            self._stop.wait(self.interval)

    def summary(self, phase: str) -> dict[str, Any] | None:
        rows = [(u, m) for p, u, m in self.samples if p == phase]
        if not rows:
            return None
        utils = [u for u, _ in rows]
        return {
            "util_mean_pct": round(sum(utils) / len(utils), 1),
            "util_max_pct": max(utils),
            "mem_used_max_mib": max(m for _, m in rows),
            "samples": len(rows),
        }


def main() -> int:
    import torch

    args = parse_args()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda" if cuda else "cpu"
    sizes = _sizes(args, GPU_SIZES if cuda else CPU_SIZES)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if cuda:
        name = torch.cuda.get_device_name(0)
        log(f"device: {name} (CUDA {torch.version.cuda}, torch {torch.__version__})")
        if "bf16" in precisions and not torch.cuda.is_bf16_supported():
            log("warning: this GPU has no native bf16; bf16 figures will be slow")
    else:
        log("device: CPU (no CUDA device available): these are CPU figures, at reduced sizes")
    root = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="hpoq-gpu-check-"))
    data = _data_config(root / "data", sizes.train_sentences)
    _warm_up(torch, device)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    # Each nvidia-smi call costs ~20 ms of CPU on an H100 host and shows up as latency
    # outliers; sampling once a second keeps that out of most timed batches.
    sampler = GpuSampler(gpu_index=visible, interval=args.smi_interval)
    sampler.start()
    figures: dict[str, Any] = {}
    try:
        for precision in precisions:
            figures[precision] = run_precision(torch, sampler, precision, device, root, data, sizes)
    finally:
        sampler.stop()
    report: dict[str, Any] = {
        "device": device,
        "device_name": next(iter(figures.values()))["device_name"],
        "cuda": cuda,
        "torch": torch.__version__,
        "nvidia_smi": sampler.available,
        "smi_interval_s": sampler.interval,
        "sizes": asdict(sizes),
        "precisions": figures,
    }
    if len(precisions) == 2:
        report["comparison"] = compare(figures["fp32"], figures["bf16"])
    print_human(report)
    print(json.dumps(report, sort_keys=True))
    return 0


def run_precision(
    torch: Any,
    sampler: GpuSampler,
    precision: str,
    device: str,
    root: Path,
    data: DataConfig,
    sizes: Sizes,
) -> dict[str, Any]:
    """One trial with fixed hyperparameters, then one benchmark of its checkpoint."""
    hpo = _hpo_config(precision, device, sizes)
    study_dir = root / f"study_{precision}"
    context = TrialContext(
        hpo=hpo,
        study_name=f"check_{precision}",
        variant=1,
        study_dir=study_dir,
        trial_dir=study_dir / "trial_0",
        data_dir=root / "data",
        device=device,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    log(f"[{precision}] training {sizes.layers}x{sizes.hidden_size} BERT, {sizes.epochs} epochs")
    sampler.phase = f"train_{precision}"
    started = time.perf_counter()
    value = objective(trial, hpo.backbones[0], data, context)
    train_wall = time.perf_counter() - started
    sampler.phase = "idle"
    study.tell(trial, value)
    train_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    summary = json.loads((context.trial_dir / "training.json").read_text(encoding="utf-8"))

    bench = BenchmarkConfig(
        batch_sizes=list(sizes.batch_sizes),
        warmup_iterations=5,
        iterations=sizes.iterations,
        max_seq_length=64,
        precisions=[precision],
    )
    log(f"[{precision}] benchmarking batch sizes {list(sizes.batch_sizes)}")
    sampler.phase = f"bench_{precision}"
    started = time.perf_counter()
    checkpoint = context.trial_dir / "checkpoint"
    result = run_inference_benchmark(checkpoint, data, context.data_dir, bench, device=device)
    bench_wall = time.perf_counter() - started
    sampler.phase = "idle"
    return {
        "device_name": result.device_name,
        "metric_macro_f1": round(value, 4),
        "train_wall_s": round(train_wall, 3),
        "train_epoch_s": [round(e["seconds"], 3) for e in summary["epochs"]],
        "train_peak_mem_mib": None if train_peak is None else round(train_peak, 1),
        "train_gpu": sampler.summary(f"train_{precision}"),
        "bench_wall_s": round(bench_wall, 3),
        "bench_memory_kind": result.memory_kind,
        "bench_gpu": sampler.summary(f"bench_{precision}"),
        # Keyed "<batch size>" for sorted batches, "<batch size>-fixed" for fixed-length ones.
        "bench": {_bench_key(e): _entry(e) for e in result.entries},
    }


def compare(fp32: dict[str, Any], bf16: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups of bf16 over fp32 as fp32 time / bf16 time: above 1 means bf16 is faster."""
    inference = {
        size: _ratio(entry["p50_ms"], bf16["bench"].get(size, {}).get("p50_ms"))
        for size, entry in fp32["bench"].items()
    }
    return {
        # Epochs after the first: the first also pays for one-time kernel loading.
        "train_steady_epochs_speedup": _ratio(_steady(fp32), _steady(bf16)),
        "train_all_epochs_speedup": _ratio(sum(fp32["train_epoch_s"]), sum(bf16["train_epoch_s"])),
        "inference_p50_speedup": inference,
        "metric_delta_bf16_minus_fp32": round(bf16["metric_macro_f1"] - fp32["metric_macro_f1"], 4),
    }


def print_human(report: dict[str, Any]) -> None:
    for precision, f in report["precisions"].items():
        log(f"\n== {precision} on {report['device_name']} ==")
        log(
            f"macro-F1 {f['metric_macro_f1']:.4f}; trial wall {f['train_wall_s']} s; "
            f"epochs {f['train_epoch_s']} s; peak allocated {f['train_peak_mem_mib']} MiB"
        )
        log(f"GPU during training: {f['train_gpu'] or 'no nvidia-smi samples'}")
        header = ("batch", "p50 ms", "p95 ms", "p99 ms", "sent/s", "tok/s", "peak MiB", "")
        log(" ".join(f"{h:>10}" for h in header))
        for size, e in f["bench"].items():
            status = "" if e["status"] == "ok" else e["status"]
            row = (size, e["p50_ms"], e["p95_ms"], e["p99_ms"], e["sentences_per_s"],
                   e["tokens_per_s"], e["peak_mem_mib"], status)  # fmt: skip
            log(" ".join(f"{value!s:>10}" for value in row))
        log(f"peak memory is {f['bench_memory_kind']}")
        log(f"GPU during benchmark: {f['bench_gpu'] or 'no nvidia-smi samples'}")
    if "comparison" in report:
        log(f"\nbf16 vs fp32 (fp32 time / bf16 time): {report['comparison']}")


def _bench_key(entry: BenchmarkEntry) -> str:
    return str(entry.batch_size) + ("-fixed" if entry.padding.value == "fixed" else "")


def _entry(entry: BenchmarkEntry) -> dict[str, Any]:
    latency = entry.latency_ms
    return {
        "status": entry.status,
        "p50_ms": None if latency is None else round(latency.p50, 3),
        "p95_ms": None if latency is None else round(latency.p95, 3),
        "p99_ms": None if latency is None else round(latency.p99, 3),
        "sentences_per_s": _round(entry.throughput_sentences_per_s),
        "tokens_per_s": _round(entry.throughput_tokens_per_s),
        "peak_mem_mib": _round(entry.peak_memory_mb),
    }


def _hpo_config(precision: str, device: str, sizes: Sizes) -> HpoConfig:
    architecture = {
        "hidden_size": sizes.hidden_size,
        "num_layers": sizes.layers,
        "num_heads": max(1, sizes.hidden_size // 64),
        "intermediate_size": 4 * sizes.hidden_size,
        "max_position_embeddings": 128,
    }
    # Single-choice parameters: every run trains the same trial; only the hardware varies.
    fixed = {
        "learning_rate": sizes.learning_rate,
        "batch_size": sizes.batch_size,
        "epochs": sizes.epochs,
        "warmup_ratio": 0.1,
    }
    return HpoConfig.model_validate(
        {
            "backbones": [{"name": "check-bert", "architecture": architecture}],
            "n_trials": 1,
            "search_space": {k: {"type": "categorical", "choices": [v]} for k, v in fixed.items()},
            "sampler": {"type": "random", "seed": 0},
            "trainer": {"precision": precision, "max_seq_length": 64, "device": device},
        }
    )


def _data_config(data_dir: Path, train_sentences: int) -> DataConfig:
    return DataConfig.model_validate(
        {
            "name": "synthetic-ner",
            "version": "1",
            "format": "conll",
            "labels": LABELS,
            "splits": {"train": "train.conll", "validation": "validation.conll",
                       "test": "test.conll"},
            "synthetic": {"seed": 13, "train_sentences": train_sentences,
                          "validation_sentences": max(10, train_sentences // 5),
                          "test_sentences": 200},
            "local_path": str(data_dir),
        }
    )  # fmt: skip


def _warm_up(torch: Any, device: str) -> None:
    """Pay one-time costs (CUDA context, kernel loading, optimizer imports) before timing."""
    from transformers import BertConfig, BertForTokenClassification

    config = BertConfig(
        vocab_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=128, num_labels=len(LABELS),
    )  # fmt: skip
    model = BertForTokenClassification(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    ids = torch.randint(0, 64, (8, 16), device=device)
    for dtype in (torch.float32, torch.bfloat16):
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, labels=torch.zeros_like(ids)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()


def _steady(figures: dict[str, Any]) -> float:
    epochs: list[float] = figures["train_epoch_s"]
    return sum(epochs[1:]) if len(epochs) > 1 else sum(epochs)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _sizes(args: argparse.Namespace, defaults: Sizes) -> Sizes:
    overrides = {
        "hidden_size": args.hidden_size,
        "layers": args.layers,
        "train_sentences": args.train_sentences,
        "epochs": args.epochs,
        "iterations": args.iterations,
        "batch_sizes": tuple(int(b) for b in args.batch_sizes.split(","))
        if args.batch_sizes
        else None,
    }
    return replace(defaults, **{k: v for k, v in overrides.items() if v is not None})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time one trial and one benchmark on this GPU.")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--train-sentences", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iterations", type=int, help="timed batches per batch size")
    parser.add_argument("--batch-sizes", help="comma-separated, e.g. 1,8,32,128")
    parser.add_argument("--output", help="working directory (default: a new temporary one)")
    parser.add_argument("--smi-interval", type=float, default=1.0, help="seconds between samples")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
