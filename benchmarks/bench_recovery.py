"""Question 9: how long does work stay lost when a worker dies? Time from SIGKILL to the
work running again on another worker, with nobody typing a command.

Three `hpoq worker` processes on a private Redis, the default visibility timeout (12 h: the
killed job's own message stays parked that long) and a lease of `--lease` seconds
(HPOQ_LEASE_SECONDS). A variant of 2 trials whose first trial hangs
(tests/integration/crashing.py:slow_first) and whose first benchmark hangs
(slow_first_benchmark): the worker running the variant's last trial is SIGKILLed (main
process and pool child), then the one measuring its benchmark. Measured, per round:

- trial: kill -> the replacement's trial starts (its Optuna `datetime_start`);
- benchmark: kill -> the benchmark, enqueued again, is published (its MLflow run's start,
  which comes after a quick measurement).

Both are set against the lease (the reaper's bound is 3 leases: one for the claim or lease
to lapse, a third of one between reaper passes, and the job's start) and against the
visibility timeout, the only way back before the reaper existed.

    python benchmarks/bench_recovery.py [--quick] [--rounds 2] [--lease 10]

Targets: recovery <= 3 x lease, for trials and for benchmarks, in every round.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

from common import (
    Deadline,
    Process,
    clean_env,
    emit,
    experiment_file,
    hpoq_worker_argv,
    private_redis,
    processes,
    ratio,
    run,
    runtime_for,
    say,
    summary,
    target,
    temp_dir,
    verdict,
    wait_for,
)

VISIBILITY_TIMEOUT_S = 12 * 3600  # hpoq's default, left as it is
OBJECTIVE = "tests.integration.crashing:slow_first"
RUNNER = "tests.integration.crashing:slow_first_benchmark"


def _running_it(workers: list[Process], job_id: str) -> Process:
    return next(w for w in workers if f"[{job_id}] received" in w.tail(10**7))


def one_round(root: Path, lease_s: float, deadline: Deadline) -> dict[str, float]:
    import redis
    from tests.integration.crashing import MARKERS_ENV

    from hpoq.config.loader import load_experiment
    from hpoq.core.celery_app import create_app
    from hpoq.core.coordination.keys import redis_keys
    from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR
    from hpoq.core.tracking import make_client
    from hpoq.core.variants import VariantRef
    from hpoq.producer.submit import Submitter

    with private_redis(root) as redis_url:
        output, markers = root / "out", root / "markers"
        markers.mkdir(parents=True)
        experiment = load_experiment(
            experiment_file(
                root, n_trials=2, objective=OBJECTIVE, benchmark_extra={"runner": RUNNER}
            )
        )
        runtime = runtime_for(output)
        env = clean_env(
            output, redis_url, HPOQ_LEASE_SECONDS=str(lease_s), **{MARKERS_ENV: str(markers)}
        )
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        store = runtime.study_store(experiment.hpo.checkpoint)
        ref = VariantRef("tiny", 1, "hpo_tiny")
        argv = hpoq_worker_argv(loglevel="INFO")
        with processes([(argv, env)] * 3, root / "logs") as workers:
            wait_for(lambda: all(" ready." in w.tail(10**7) for w in workers), deadline, 0.5)
            app = create_app(redis_url)
            Submitter(experiment, runtime, client, redis_keys(runtime), app).submit()

            def hung() -> Any:
                study = store.load(ref)
                if study is None:
                    return None
                trials = study.get_trials(deepcopy=False)
                done = [t for t in trials if t.state.name == "COMPLETE"]
                running = [
                    t for t in trials if t.state.name == "RUNNING" and RUN_ID_ATTR in t.user_attrs
                ]
                return running[0] if running and len(done) == 1 else None

            trial = wait_for(hung, deadline, 0.25)
            killed = str(trial.user_attrs[JOB_ID_ATTR])
            victim = _running_it(workers, killed)
            killed_at = time.time()
            _sigkill(victim)

            def replacement_start() -> float | None:
                study = store.load(ref)
                for t in [] if study is None else study.get_trials(deepcopy=False):
                    if t.user_attrs.get(JOB_ID_ATTR) == f"{killed}.r1" and t.datetime_start:
                        return float(t.datetime_start.timestamp())
                return None

            trial_s = wait_for(replacement_start, deadline, 0.25) - killed_at
            alive = [w for w in workers if w is not victim]

            def measuring() -> str | None:  # holds the key and is inside the runner
                if not (markers / "benchmark").exists():
                    return None
                for key in client.scan_iter("hpoq:*:bench-lease:*"):
                    holder = client.get(key) or ""
                    if "@" in holder:
                        return holder.split("@", 1)[0]
                return None

            killed_bench = wait_for(measuring, deadline, 0.25)
            bench_victim = _running_it(alive, killed_bench)
            killed_at = time.time()
            _sigkill(bench_victim)
            mlflow = make_client(runtime.mlflow_uri())

            def published() -> float | None:
                found = mlflow.get_experiment_by_name(experiment.benchmark_experiment_name)
                if found is None:
                    return None
                runs = mlflow.search_runs([found.experiment_id], "attributes.status = 'FINISHED'")
                return runs[0].info.start_time / 1000 if runs else None

            bench_s = wait_for(published, deadline, 0.25) - killed_at
            app.close()
        client.close()
    return {"trial_s": round(trial_s, 2), "benchmark_s": round(bench_s, 2)}


def _sigkill(worker: Process) -> None:
    """The whole worker: main process and pool child, as the kernel's OOM killer would."""
    os.killpg(worker.pid, signal.SIGKILL)
    worker.popen.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lease", type=float, default=10.0, help="HPOQ_LEASE_SECONDS")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    deadline = Deadline(args.timeout, "bench_recovery")
    measured: list[dict[str, float]] = []
    for number in range(rounds):
        with temp_dir(f"recovery-{number}") as tmp:
            measured.append(one_round(tmp, args.lease, deadline))
        say(f"round {number + 1}: {measured[-1]} (lease {args.lease} s)")
    trial = [m["trial_s"] for m in measured]
    bench = [m["benchmark_s"] for m in measured]
    figures = {
        "lease_s": args.lease,
        "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        "rounds": measured,
        "trial_s": summary(trial),
        "benchmark_s": summary(bench),
        "trial_worst_over_lease": ratio(max(trial), args.lease),
        "benchmark_worst_over_lease": ratio(max(bench), args.lease),
        "visibility_timeout_over_worst": ratio(VISIBILITY_TIMEOUT_S, max(trial + bench), 0),
    }
    say(
        f"trial back after {figures['trial_s']['p50']} s p50 (worst x"
        f"{figures['trial_worst_over_lease']} the lease); benchmark after "
        f"{figures['benchmark_s']['p50']} s p50 (worst x{figures['benchmark_worst_over_lease']}); "
        f"the visibility timeout alone: {VISIBILITY_TIMEOUT_S} s"
    )
    targets = {
        "trial_worst_over_lease": target(figures["trial_worst_over_lease"], "<=", 3),
        "benchmark_worst_over_lease": target(figures["benchmark_worst_over_lease"], "<=", 3),
    }
    say(verdict(targets))
    emit("recovery", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
