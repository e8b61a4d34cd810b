"""Question 3: does a sweep keep every worker busy? Makespan against the ideal, and the gap
between one job's end and the next job's start on a worker.

Four `hpoq worker` processes (queue hpo) on a private Redis, SQLite MLflow and file-journal
Optuna (hpoq's local defaults), warmed up with a few short jobs; then one `hpoq submit`
of 40 trials whose objective sleeps 5.0 s down to 0.5 s (longest first, so a greedy
queue can pack them tightly; sleeps stand in for GPU work and need no CPU), then hpoq's
cheap objective (benchmarks/workloads.py:sleep_objective).

- makespan: submit -> last trial job ends; ideal = sum of sleeps / workers; the issue's
  ratio is makespan / ideal. Also reported: the makespan a zero-overhead queue would get
  with the same start order (greedy list schedule of the measured durations), which
  separates hpoq's overhead from how the jobs happen to pack;
- gaps per worker: objective end -> next objective start (what a GPU would sit idle),
  and Celery task end -> next task start (the queue's hand-off alone).

    python benchmarks/bench_sweep.py [--quick] [--jobs 40] [--workers 4] [--longest 5]
        [--shortest 0.5]

Targets: makespan / ideal <= 1.05; gap p50 < 50 ms.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import time
from pathlib import Path
from typing import Any

from common import (
    SLEEP_OBJECTIVE,
    TIMED_RUNNER,
    Deadline,
    clean_env,
    emit,
    experiment_file,
    fmt,
    hpoq_worker_argv,
    private_redis,
    processes,
    ratio,
    read_records,
    run,
    runtime_for,
    say,
    summary,
    target,
    temp_dir,
    verdict,
    wait_for,
    wait_ready,
)

WARM_JOBS = 12
WARM_SECONDS = 0.3


def durations(jobs: int, longest: float, shortest: float) -> list[float]:
    """Evenly spread from longest to shortest: trial n (started n-th) sleeps durations[n]."""
    if jobs == 1:
        return [longest]
    step = (longest - shortest) / (jobs - 1)
    return [round(longest - i * step, 3) for i in range(jobs)]


def submit(root: Path, output: Path, redis_url: str, name: str, n_trials: int) -> float:
    """`hpoq submit` of one variant of backbone `name`; returns the wall time it began."""
    from hpoq.config.loader import load_experiment
    from hpoq.core.celery_app import create_app
    from hpoq.core.coordination.connection import connect
    from hpoq.core.coordination.keys import redis_keys
    from hpoq.producer.submit import Submitter

    experiment = load_experiment(
        experiment_file(
            root / name,
            name=name,
            backbones=(name,),
            n_trials=n_trials,
            objective=SLEEP_OBJECTIVE,
            benchmark_extra={"runner": TIMED_RUNNER},
        )
    )
    runtime = runtime_for(output)
    client, app = connect(redis_url), create_app(redis_url)
    try:
        began = time.time()
        [result] = Submitter(experiment, runtime, client, redis_keys(runtime), app).submit()
    finally:
        client.close()
        app.close()
    assert result.trials_enqueued == n_trials, result
    return began


def finished(records_dir: Path, backbone: str, count: int) -> list[dict[str, Any]] | None:
    """The objective records of `backbone`, once `count` of its tasks have ended."""
    rows = read_records(records_dir)
    objectives = [r for r in rows if r["kind"] == "objective" and r.get("backbone") == backbone]
    ids = {r["job_id"] for r in objectives}
    ends = [r for r in rows if r["kind"] == "task_end" and r["job_id"] in ids]
    return rows if len(ends) >= count else None


def list_schedule(jobs: list[float], workers: int) -> float:
    """Makespan of handing each job, in order, to the first free worker, with no overhead."""
    free = [0.0] * workers
    for seconds in jobs:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def analyse(rows: list[dict[str, Any]], began: float, workers: int) -> dict[str, Any]:
    objectives = sorted(
        (r for r in rows if r["kind"] == "objective" and r.get("backbone") == "sweep"),
        key=lambda r: r["start"],
    )
    ids = {r["job_id"] for r in objectives}
    tasks = [r for r in rows if r["kind"] in ("task_start", "task_end") and r["job_id"] in ids]
    end = max(r["t"] for r in tasks if r["kind"] == "task_end")
    planned = sum(r["planned"] for r in objectives)
    makespan = end - began
    greedy = list_schedule([r["seconds"] for r in objectives], workers)
    idle, handoff = [], []
    for pid in {r["pid"] for r in objectives}:  # one pool process per worker
        mine = [r for r in objectives if r["pid"] == pid]
        idle += [b["start"] - a["end"] for a, b in itertools.pairwise(mine)]
        marks = sorted((r for r in tasks if r["pid"] == pid), key=lambda r: r["t"])
        handoff += [
            b["t"] - a["t"]
            for a, b in itertools.pairwise(marks)
            if a["kind"] == "task_end" and b["kind"] == "task_start"
        ]
    pids = {r["pid"] for r in objectives}
    per_worker = sorted(sum(1 for r in objectives if r["pid"] == pid) for pid in pids)
    return {
        "jobs": len(objectives),
        "workers_used": len(per_worker),
        "jobs_per_worker": per_worker,
        "sum_sleep_s": round(planned, 2),
        "ideal_s": round(planned / workers, 3),
        "makespan_s": round(makespan, 3),
        "makespan_over_ideal": ratio(makespan, planned / workers, 3),
        "greedy_no_overhead_s": round(greedy, 3),
        "makespan_over_greedy": ratio(makespan, greedy, 3),
        "first_start_s": round(objectives[0]["start"] - began, 3),
        "last_objective_end_s": round(max(r["end"] for r in objectives) - began, 3),
        "idle_gap_ms": summary(idle, 1000),
        "handoff_gap_ms": summary(handoff, 1000),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same sweep (about 30 s)")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--longest", type=float, default=5.0)
    parser.add_argument("--shortest", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    deadline = Deadline(args.timeout, "bench_sweep")
    plan = durations(args.jobs, args.longest, args.shortest)

    results: dict[str, dict[str, Any]] = {}
    with temp_dir("sweep") as tmp, private_redis(tmp) as redis_url:
        rows, began, warm_pids = one_sweep(tmp / "as_is", redis_url, plan, args.workers, deadline)
        results["as_is"] = analyse(rows, began, args.workers)
        results["as_is"]["warm_workers"] = len(warm_pids)

    for label, f in results.items():
        say(
            f"[{label}] makespan {f['makespan_s']} s; ideal (sum of sleeps / {args.workers}) "
            f"{f['ideal_s']} s -> x{f['makespan_over_ideal']}; zero-overhead greedy schedule of "
            f"the same order {f['greedy_no_overhead_s']} s -> x{f['makespan_over_greedy']}"
        )
        say(
            f"[{label}] first objective started {f['first_start_s']} s after submit; jobs per "
            f"worker {f['jobs_per_worker']}"
        )
        say(f"[{label}] objective end -> next objective start, per worker: {fmt(f['idle_gap_ms'])}")
        say(f"[{label}] task end -> next task start, per worker: {fmt(f['handoff_gap_ms'])}")
    f = results["as_is"]
    targets = {
        "makespan_over_ideal": target(f["makespan_over_ideal"], "<=", 1.05),
        "idle_gap_p50_ms": target(f["idle_gap_ms"]["p50"], "<", 50, " ms"),
    }
    say(verdict(targets))
    emit("sweep", {"workers": args.workers, "durations_s": plan, **results}, targets)
    return 0


def one_sweep(
    root: Path, redis_url: str, plan: list[float], workers: int, deadline: Deadline
) -> tuple[list[dict[str, Any]], float, set[int]]:
    """Start the workers, warm them up, submit the sweep, wait for its last job."""
    from hpoq.core.celery_app import create_app

    output, records = root / "out", root / "records"
    records.mkdir(parents=True)
    table = {"sweep": plan, "warm": [WARM_SECONDS] * WARM_JOBS}
    env = clean_env(
        output,
        redis_url,
        HPOQ_BENCH_RECORD_DIR=str(records),
        HPOQ_BENCH_DURATIONS=json.dumps(table),
    )
    label = "as is"
    control = create_app(redis_url)
    try:
        with processes(
            [(hpoq_worker_argv(queues="hpo", index=i), env) for i in range(workers)], root / "logs"
        ) as procs:
            start = time.monotonic()
            wait_ready(control, workers, procs, deadline)
            say(f"[{label}] {workers} workers up in {time.monotonic() - start:.1f} s")
            submit(root, output, redis_url, "warm", WARM_JOBS)
            warm = wait_for(lambda: finished(records, "warm", WARM_JOBS), deadline, 0.2)
            warm_pids = {r["pid"] for r in warm if r["kind"] == "objective"}
            say(f"[{label}] warm-up: {WARM_JOBS} jobs on {len(warm_pids)} workers")
            say(f"[{label}] sweep: {len(plan)} jobs, {plan[0]} s down to {plan[-1]} s")
            began = submit(root, output, redis_url, "sweep", len(plan))
            rows = wait_for(lambda: finished(records, "sweep", len(plan)), deadline, 0.2)
    finally:
        control.close()
    return rows, began, warm_pids


if __name__ == "__main__":
    run(main)
