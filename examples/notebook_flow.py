"""The notebook flow from Python: retrieve the best trials, keep the ones without a
benchmark, enqueue their benchmarks.

Run after a sweep (for example `hpoq run config/experiment/smoke.yaml`), with workers up
(`hpoq worker`) for the enqueued benchmarks to be measured:

    python examples/notebook_flow.py config/experiment/smoke.yaml
"""

from __future__ import annotations

import sys

from hpoq import api


def main(path: str) -> None:
    experiment = api.load_experiment(path)
    best = api.retrieve_best_trials(experiment, scope="per_variant")
    for trial in best.best:
        print(f"{trial.backbone:12} {trial.study_name:20} trial {trial.trial_number:3} "
              f"{trial.metric}={trial.value:.4f} ({trial.source})")  # fmt: skip
    todo = api.filter_unbenchmarked(experiment, best.best)
    print(f"{len(todo)} of {len(best.best)} best trials have no benchmark yet")
    report = api.benchmark_trials(experiment, todo)
    print(f"enqueued {len(report.enqueued)}, in flight {len(report.skipped_in_flight)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "config/experiment/smoke.yaml")
