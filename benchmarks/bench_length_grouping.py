"""Question 10: does length-grouped padding keep the metric while cutting the padding?

The built-in trainer on the CPU, with the smoke experiment's backbone (a 2x64 BERT built
from config) and a smoke trial's parameters (batch 16, learning rate 3e-3, 2 epochs,
warm-up 5%, dropout 0.1), trained with `trainer.length_grouping` off (shuffled batches,
evaluation in file order) and on (length-grouped batches, length-sorted evaluation), at
the same seeds, on two generated datasets of 600 training and 150 validation sentences:

- tweets: lengths drawn like tweets' (`tweet_like_sentences`: 18.6 words on average, a
  tail to 64): what grouping is for;
- templates: the smoke experiment's synthetic set (6-15 words), where a sentence's length
  says much about its template, the harder case for grouping (batches of one length hold
  similar sentences).

Measured per dataset: final validation macro-F1 per seed, its mean and spread, the
difference of the means (grouping on minus off), the padding share of the training
batches, and the padded positions the model computed per epoch, off over on (the compute
that grouping saves, independent of the device). Epoch seconds are printed for the record
only (a shared 2-core CPU: noisy).

    python benchmarks/bench_length_grouping.py [--quick] [--seeds 5] [--epochs 2]

Targets: |mean macro-F1 on - off| <= 0.03 on both datasets (the seed-to-seed spread of one
setting is about as large). The padded positions are a figure, not a target: what they
buy in time depends on the device, which `scripts/gpu_sweep.py` measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Deadline, emit, ratio, run, say, target, verdict
from hpoq.config.data import DataConfig
from hpoq.config.hpo import BackboneConfig, TrainerConfig
from hpoq.core.datasets import ensure_dataset
from hpoq.core.datasets.synthetic import tweet_like_sentences
from hpoq.core.datasets.writers import write_sentences
from hpoq.workers.training.hyperparams import HyperParams
from hpoq.workers.training.trainer import train_token_classifier

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
SMOKE_BACKBONE = BackboneConfig.model_validate(
    {
        "name": "tiny-bert",
        "architecture": {
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 128,
        },
    }
)
PARAMS = HyperParams(learning_rate=3e-3, batch_size=16, epochs=2, warmup_ratio=0.05, dropout=0.1)
TRAIN, VALIDATION = 600, 150
F1_TOLERANCE = 0.03


def dataset(root: Path, kind: str) -> tuple[DataConfig, Path]:
    directory = root / kind
    config: dict[str, Any] = {
        "name": f"bench-{kind}",
        "version": "1",
        "format": "conll",
        "local_path": str(directory),
        "splits": {"train": "train.conll", "validation": "validation.conll", "test": "test.conll"},
        "labels": LABELS,
    }
    if kind == "templates":
        config["synthetic"] = {
            "seed": 13,
            "train_sentences": TRAIN,
            "validation_sentences": VALIDATION,
            "test_sentences": 10,
        }
        data = DataConfig.model_validate(config)
        ensure_dataset(data, directory)
        return data, directory
    directory.mkdir(parents=True)
    for split, count in (("train", TRAIN), ("validation", VALIDATION), ("test", 10)):
        write_sentences(directory / f"{split}.conll", tweet_like_sentences(split, count), "conll")
    return DataConfig.model_validate(config), directory


def train(
    data: DataConfig, directory: Path, params: HyperParams, grouping: bool, seed: int
) -> dict[str, Any]:
    trainer = TrainerConfig(max_seq_length=96, device="cpu", length_grouping=grouping)
    started = time.perf_counter()
    result = train_token_classifier(SMOKE_BACKBONE, data, directory, trainer, params, seed=seed)
    return {
        "macro_f1": result.final_scores.macro_f1,
        "padding": statistics.fmean(r.padding_fraction for r in result.history),
        "epoch_s": statistics.fmean(r.seconds for r in result.history),
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds instead of 5")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=PARAMS.epochs)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    seeds = 3 if args.quick else args.seeds
    params = dataclasses.replace(PARAMS, epochs=args.epochs)
    deadline = Deadline(args.timeout, "bench_length_grouping")
    say(
        f"2x64 BERT, batch {params.batch_size}, lr {params.learning_rate}, {params.epochs} "
        f"epochs; {TRAIN}/{VALIDATION} sentences; seeds 0..{seeds - 1}; grouping off vs on"
    )
    figures: dict[str, Any] = {"seeds": seeds, "params": dataclasses.asdict(params)}
    with tempfile.TemporaryDirectory(prefix="hpoq-bench-grouping-") as tmp:
        for kind in ("tweets", "templates"):
            data, directory = dataset(Path(tmp), kind)
            rows: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for seed in range(seeds):
                for mode in ("off", "on"):
                    deadline.check()
                    rows[mode].append(train(data, directory, params, mode == "on", seed))
            row: dict[str, Any] = {}
            for mode, runs in rows.items():
                f1 = [r["macro_f1"] for r in runs]
                row[mode] = {
                    "macro_f1": [round(v, 4) for v in f1],
                    "mean": round(statistics.fmean(f1), 4),
                    "stdev": round(statistics.stdev(f1), 4) if len(f1) > 1 else None,
                    "padding_fraction": round(statistics.fmean(r["padding"] for r in runs), 3),
                    "epoch_s_mean": round(statistics.fmean(r["epoch_s"] for r in runs), 3),
                }
            row["mean_difference"] = round(row["on"]["mean"] - row["off"]["mean"], 4)
            # Real tokens are the same either way: positions computed = real / (1 - padding).
            row["padded_positions_off_over_on"] = ratio(
                1 - row["on"]["padding_fraction"], 1 - row["off"]["padding_fraction"]
            )
            figures[kind] = row
            say(
                f"{kind:<10} macro-F1 off {row['off']['mean']:.4f} (sd {row['off']['stdev']}) "
                f"{row['off']['macro_f1']}, on {row['on']['mean']:.4f} (sd {row['on']['stdev']}) "
                f"{row['on']['macro_f1']}: difference {row['mean_difference']:+.4f}; padding "
                f"{row['off']['padding_fraction']} -> {row['on']['padding_fraction']}, padded "
                f"positions x{row['padded_positions_off_over_on']} fewer; epoch "
                f"{row['off']['epoch_s_mean']} -> {row['on']['epoch_s_mean']} s (CPU)"
            )
    targets = {
        "tweets_mean_f1_difference": target(
            abs(figures["tweets"]["mean_difference"]), "<=", F1_TOLERANCE
        ),
        "templates_mean_f1_difference": target(
            abs(figures["templates"]["mean_difference"]), "<=", F1_TOLERANCE
        ),
    }
    say(verdict(targets))
    emit("length_grouping", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
