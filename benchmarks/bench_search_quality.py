"""Question 8: does a parallel search search as well as a sequential one, without duplicates?

A synthetic objective with a known optimum and noise over the smoke search space
(`config/hpo/smoke.yaml`: a log-scale learning rate, a categorical batch size, an integer
epoch count and three floats): the 6-D Hartmann function, shifted so that its global
minimum (-3.32237) lies inside that space at batch_size 16 and epochs 3, plus Gaussian
noise (sd 0.1). 40 trials per search, minimised; 10 seeds (`sampler.seed` 0..9).

- sequential: one worker, ask -> evaluate -> tell;
- parallel: 4 workers started together, 4 trials in flight: a simulated clock, trial
  durations drawn from U(0.5, 1.5); at each instant finished trials are told first, then
  every free worker reads the history and asks. Each ask opens the study afresh with
  `build_sampler`, as a trial job does (`open_variant_study`).

Both seeding schemes, side by side on the same objective, noise and clock:
- before: the sampler seeded with `seed + number of trials the worker read` (TPE with
  Optuna's defaults);
- after: hpoq's `build_sampler` (a seed per trial from (seed, variant, trial number), TPE
  with constant_liar);
- after_without_liar, the ablation: the same seeds, TPE with constant_liar off.

Measured per search: simple regret (noise-free value of the trial with the best observed
value, minus the optimum) and duplicate points (a trial with exactly the parameters of an
earlier trial of the same search).

    python benchmarks/bench_search_quality.py [--quick] [--seeds 10] [--trials 40]

Targets (after): median regret of parallel <= 1.3x sequential; 0 duplicate points.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from common import REPO, Deadline, emit, ratio, run, say, target, verdict
from hpoq.config.hpo import CategoricalParam, HpoConfig, LogParam, SamplerConfig, SearchParam
from hpoq.config.loader import load_model
from hpoq.core.objective import suggest_params
from hpoq.core.optuna_setup import build_sampler
from hpoq.core.seeded_sampler import PerTrialSeedSampler

SMOKE = REPO / "config" / "hpo" / "smoke.yaml"
WORKERS = 4
NOISE_SD = 0.1
VARIANT = 1

# Hartmann 6-D: minimum -3.32237 at X_STAR (Surjanovic & Bingham's test-function library).
ALPHA = (1.0, 1.2, 3.0, 3.2)
A = (
    (10, 3, 17, 3.5, 1.7, 8),
    (0.05, 10, 17, 0.1, 8, 14),
    (3, 3.5, 1.7, 10, 17, 8),
    (17, 8, 0.05, 10, 0.1, 14),
)
P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)
X_STAR = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
F_STAR = -3.32237
# Where the optimum lies in the search space, as positions in [0, 1] of each parameter in
# smoke.yaml's order: learning_rate, batch_size (16), epochs (3), warmup_ratio,
# weight_decay, dropout.
OPTIMUM_AT = (0.7, 0.0, 1.0, 0.25, 0.6, 0.35)

Point = tuple[tuple[str, Any], ...]
SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]


def hartmann6(x: tuple[float, ...]) -> float:
    return -sum(
        alpha * math.exp(-sum(a * (xj - p) ** 2 for a, xj, p in zip(row, x, prow, strict=True)))
        for alpha, row, prow in zip(ALPHA, A, P, strict=True)
    )


def position(value: Any, spec: SearchParam) -> float:
    if isinstance(spec, CategoricalParam):
        return spec.choices.index(value) / (len(spec.choices) - 1)
    low, high, x = float(spec.low), float(spec.high), float(value)
    if isinstance(spec, LogParam) or spec.log:
        low, high, x = math.log(low), math.log(high), math.log(x)
    return (x - low) / (high - low)


def true_value(params: Mapping[str, Any], space: Mapping[str, SearchParam]) -> float:
    """The shifted Hartmann function: its minimum F_STAR where the positions are OPTIMUM_AT."""
    positions = [position(params[name], spec) for name, spec in space.items()]
    shifted = tuple(
        x_star + p - at for x_star, p, at in zip(X_STAR, positions, OPTIMUM_AT, strict=True)
    )
    return hartmann6(shifted)


def before(config: SamplerConfig) -> Callable[[int, int], optuna.samplers.BaseSampler]:
    """The former seeding: `seed + number of trials the worker read`, Optuna's TPE defaults."""

    def make(history_length: int, variant: int) -> optuna.samplers.BaseSampler:
        seed = None if config.seed is None else config.seed + history_length
        if config.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    return make


def after(config: SamplerConfig) -> Callable[[int, int], optuna.samplers.BaseSampler]:
    return lambda history_length, variant: build_sampler(config, variant)


def after_without_liar(config: SamplerConfig) -> Callable[[int, int], optuna.samplers.BaseSampler]:
    """The ablation: seeds per trial as hpoq's, TPE with constant_liar off."""

    def make(history_length: int, variant: int) -> optuna.samplers.BaseSampler:
        assert config.seed is not None and config.type == "tpe"
        return PerTrialSeedSampler(
            lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=False),
            config.seed,
            variant,
        )

    return make


SCHEMES = {"before": before, "after": after, "after_without_liar": after_without_liar}


def search(
    hpo: HpoConfig,
    scheme: str,
    seed: int,
    workers: int,
    n_trials: int,
) -> dict[str, Any]:
    """One search of n_trials with `workers` in flight; returns regret and duplicates."""
    config = hpo.sampler.model_copy(update={"seed": seed})
    make = SCHEMES[scheme](config)
    space = hpo.search_space
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="bench", storage=storage, direction="minimize")
    noise = random.Random(f"noise-{seed}")
    durations = random.Random(f"durations-{seed}")
    # Events: (finish time, order, trial number, observed value). Workers free at t=0.
    running: list[tuple[float, int, int, float]] = []
    free, now, asked = workers, 0.0, 0
    observed: dict[int, tuple[float, float, Point]] = {}  # number -> (observed, true, point)
    started = time.perf_counter()
    while len(observed) < n_trials:
        # Every free worker reads the history at this instant, then each one asks.
        read = len(storage.get_all_trials(storage.get_study_id_from_name("bench")))
        samplers = [make(read, VARIANT) for _ in range(min(free, n_trials - asked))]
        for sampler in samplers:
            study = optuna.load_study(study_name="bench", storage=storage, sampler=sampler)
            trial = study.ask()
            params = suggest_params(trial, space)
            truth = true_value(params, space)
            value = truth + noise.gauss(0.0, NOISE_SD)
            observed[trial.number] = (value, truth, tuple(sorted(params.items())))
            finish = now + (durations.uniform(0.5, 1.5) if workers > 1 else 1.0)
            heapq.heappush(running, (finish, asked, trial.number, value))
            asked += 1
            free -= 1
        # The next instant: everything that finishes then is told.
        now = running[0][0]
        while running and running[0][0] == now:
            _, _, number, value = heapq.heappop(running)
            study = optuna.load_study(study_name="bench", storage=storage)
            study.tell(number, value)
            free += 1
    while running:  # tell what is left (keeps the study complete; not needed for figures)
        _, _, number, value = heapq.heappop(running)
        optuna.load_study(study_name="bench", storage=storage).tell(number, value)
    points = [observed[n][2] for n in sorted(observed)]
    incumbent = min(observed.values(), key=lambda o: o[0])
    return {
        "regret": incumbent[1] - F_STAR,
        "duplicates": len(points) - len(set(points)),
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 seeds instead of 10")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    seeds = 4 if args.quick else args.seeds
    deadline = Deadline(args.timeout, "bench_search_quality")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    hpo = load_model(SMOKE, HpoConfig)
    assert list(hpo.search_space) == [
        "learning_rate",
        "batch_size",
        "epochs",
        "warmup_ratio",
        "weight_decay",
        "dropout",
    ], "OPTIMUM_AT follows smoke.yaml's parameters in this order"
    say(
        f"shifted Hartmann-6 over {SMOKE.name}'s search space ({hpo.sampler.type}), optimum "
        f"{F_STAR}, noise sd {NOISE_SD}; {args.trials} trials; seeds 0..{seeds - 1}"
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for scheme in SCHEMES:
        for mode, workers in (("sequential", 1), ("parallel", WORKERS)):
            runs = []
            for seed in range(seeds):
                deadline.check()
                runs.append(search(hpo, scheme, seed, workers, args.trials))
            results.setdefault(scheme, {})[mode] = runs

    figures: dict[str, Any] = {
        "objective": "shifted Hartmann-6 + N(0, 0.1)",
        "trials": args.trials,
        "seeds": seeds,
        "workers": WORKERS,
        "sampler": hpo.sampler.type,
    }
    for scheme, modes in results.items():
        row: dict[str, Any] = {}
        for mode, runs in modes.items():
            regrets = [r["regret"] for r in runs]
            row[mode] = {
                "median_regret": round(statistics.median(regrets), 4),
                "mean_regret": round(statistics.fmean(regrets), 4),
                "regrets": [round(r, 4) for r in regrets],
                "duplicates": sum(r["duplicates"] for r in runs),
                "searches_with_duplicates": sum(1 for r in runs if r["duplicates"]),
                "seconds_per_search": round(statistics.fmean(r["seconds"] for r in runs), 2),
            }
        row["parallel_over_sequential"] = ratio(
            row["parallel"]["median_regret"], row["sequential"]["median_regret"]
        )
        figures[scheme] = row
        say(
            f"{scheme:<18} median regret sequential {row['sequential']['median_regret']:.4f}, "
            f"parallel {row['parallel']['median_regret']:.4f} "
            f"(x{row['parallel_over_sequential']}); duplicate points: sequential "
            f"{row['sequential']['duplicates']}, parallel {row['parallel']['duplicates']} "
            f"(in {row['parallel']['searches_with_duplicates']} of {seeds} searches)"
        )
    new = figures["after"]
    targets = {
        "parallel_over_sequential_regret": target(new["parallel_over_sequential"], "<=", 1.3),
        "duplicate_points": target(
            new["parallel"]["duplicates"] + new["sequential"]["duplicates"], "<=", 0
        ),
    }
    say(verdict(targets))
    emit("search_quality", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
