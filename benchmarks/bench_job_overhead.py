"""Question 1: what a trial job and a benchmark job cost beyond the work inside them.

Overhead = wall time of the job - time inside the objective (trial job) or the runner
(benchmark job). The objective is hpoq's cheap objective and the runner hpoq's cheap runner,
each wrapped to time itself (benchmarks/workloads.py); MLflow logs to SQLite, Optuna to a
file journal, Redis is a private real server: hpoq's local defaults.

Two ways, side by side in one run:
- in-process: the Celery task functions (`run_trial`, `run_benchmark`) called with
  `Task.apply` one after another in one warm process, after a warm-up job; the variant
  grows by one trial per job, so the last jobs show how the cost grows with the record;
- one real warm worker (`hpoq worker`, prefork, concurrency 1) fed a full queue: the task
  body's wall time from Celery's task_prerun/task_postrun signals, the objective's own
  time, and the gaps between jobs (what the GPU would wait).

    python benchmarks/bench_job_overhead.py [--quick] [--trials N] [--benchmarks N]

Targets (2-core machine): overhead p50 <= 100 ms, p95 <= 250 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    TIMED_OBJECTIVE,
    TIMED_RUNNER,
    Deadline,
    clean_env,
    emit,
    experiment_file,
    fmt,
    handle_signals,
    hpoq_worker_argv,
    private_redis,
    processes,
    profiled,
    read_records,
    runtime_for,
    say,
    set_process_env,
    summary,
    target,
    temp_dir,
    verdict,
    wait_for,
    wait_ready,
)

WARMUP = 2  # untimed jobs first: imports, MLflow schema check, first storage open


class World:
    """The producer side of one output directory: services, a submitter, a dispatcher."""

    def __init__(self, output: Path, redis_url: str) -> None:
        from hpoq.core.coordination.connection import connect
        from hpoq.producer.services import Services
        from hpoq.workers.celery_app import create_app
        from hpoq.workers.context import redis_keys

        self.runtime = runtime_for(output)
        client = connect(redis_url)
        self.services = Services(self.runtime, redis_url, client, redis_keys(self.runtime),
                                 create_app(redis_url), None)  # fmt: skip
        self.redis = client

    def submit(self, experiment: Any) -> list[str]:
        from hpoq.producer.submit import Submitter

        mlflow = self.services.mlflow()
        results = Submitter(experiment, self.runtime, self.redis, self.services.keys,
                            self.services.celery, mlflow=mlflow).submit()  # fmt: skip
        return [job_id for r in results for job_id in r.job_ids]

    def enqueue_benchmarks(self, experiment: Any, count: int) -> list[str]:
        """`count` benchmark jobs of the best trial, each under its own key (a distinct
        trial id in the key), through hpoq's one dispatch path."""
        from hpoq.config.base import RunMode
        from hpoq.core.benchmark_dispatch import dispatch
        from hpoq.core.benchmark_index import select_candidates
        from hpoq.core.coordination.leases import BenchmarkLeases

        mlflow = self.services.mlflow()
        [best], _, _ = select_candidates(experiment, self.runtime, client=mlflow)
        candidates = []
        for i in range(count):
            parts = best.key.split(":")
            parts[3] = f"{parts[3]}-b{i}"
            candidates.append(best.model_copy(update={"key": ":".join(parts)}))
        report = dispatch(experiment, self.runtime, candidates, mode=RunMode.REUSE_IF_EXISTS,
                          leases=BenchmarkLeases(self.redis, self.services.keys),
                          sender=self.services.celery, client=mlflow)  # fmt: skip
        return report.job_ids

    def close(self) -> None:
        self.services.close()


def in_process(world: World, root: Path, trials: int, benchmarks: int, deadline: Deadline,
               profile: bool = False) -> dict[str, Any]:  # fmt: skip
    """Task bodies called one by one in this (warm) process."""
    from hpoq.config.loader import load_experiment
    from tests.queue_messages import drain

    import benchmarks.workloads as workloads
    import hpoq.workers.tasks as tasks

    experiment = load_experiment(experiment_file(
        root, name="inproc", backbones=("inproc",), n_trials=trials + WARMUP,
        objective=TIMED_OBJECTIVE, benchmark_extra={"runner": TIMED_RUNNER},
    ))  # fmt: skip
    world.submit(experiment)
    queued = drain(world.redis, "hpo")
    _run_queue(queued[:WARMUP], tasks.run_trial, "objective", workloads.RECORDS, deadline)
    with profiled(profile, "in-process trial jobs"):
        trial_rows = _run_queue(queued[WARMUP:], tasks.run_trial, "objective",
                                workloads.RECORDS, deadline)  # fmt: skip
    auto = drain(world.redis, "benchmark")  # enqueued by the variant's last trial
    _run_queue(auto, tasks.run_benchmark, "runner", workloads.RECORDS, deadline)
    world.enqueue_benchmarks(experiment, benchmarks)
    with profiled(profile, "in-process benchmark jobs"):
        bench_rows = _run_queue(drain(world.redis, "benchmark"), tasks.run_benchmark, "runner",
                                workloads.RECORDS, deadline)  # fmt: skip
    return {"trial": trial_rows, "benchmark": bench_rows,
            "auto_benchmarks": len(auto)}  # fmt: skip


def _run_queue(messages: list[tuple[str, Any]], task: Any, kind: str,
               records: list[dict[str, Any]], deadline: Deadline) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for task_id, payload in messages:
        deadline.check()
        before = len(records)
        start = time.perf_counter()
        result = task.apply(args=[payload], task_id=task_id)
        wall = time.perf_counter() - start
        if not result.successful():
            raise RuntimeError(f"{task.name} {task_id} failed: {result.result!r}")
        status = result.result.get("status")
        inner = [r for r in records[before:] if r["kind"] == kind]
        work = sum(r["seconds"] for r in inner)
        rows.append({"job_id": task_id, "status": status, "wall": wall, "work": work,
                     "overhead": wall - work,
                     "variant_complete": bool(result.result.get("variant_complete"))})  # fmt: skip
    return rows


def on_worker(world: World, root: Path, output: Path, redis_url: str, trials: int,
              benchmarks: int, deadline: Deadline) -> dict[str, Any]:  # fmt: skip
    """One `hpoq worker` with a full queue; timings recorded inside the worker."""
    from hpoq.config.loader import load_experiment

    records_dir = root / "records"
    records_dir.mkdir(parents=True)
    env = clean_env(output, redis_url, HPOQ_BENCH_RECORD_DIR=str(records_dir))
    experiment = load_experiment(experiment_file(
        root / "worker", name="onworker", backbones=("onworker",), n_trials=trials + WARMUP,
        objective=TIMED_OBJECTIVE, benchmark_extra={"runner": TIMED_RUNNER},
    ))  # fmt: skip
    with processes([hpoq_worker_argv()], env, root / "logs") as procs:
        wait_ready(world.services.celery, 1, procs, deadline)
        world.submit(experiment)
        # every trial, then the benchmark its variant's last trial enqueues
        _wait_tasks(records_dir, "hpoq.run_benchmark", 1, procs, deadline)
        job_ids = world.enqueue_benchmarks(experiment, benchmarks)
        _wait_tasks(records_dir, "hpoq.run_benchmark", 1 + len(job_ids), procs, deadline)
    rows = read_records(records_dir)
    return {
        "trial": _task_rows(rows, "hpoq.run_trial", "objective")[WARMUP - 1 :],
        "benchmark": _task_rows(rows, "hpoq.run_benchmark", "runner")[1:],
        "gaps": _gaps(rows),
    }


def _wait_tasks(directory: Path, name: str, count: int, procs: list[Any],
                deadline: Deadline) -> None:  # fmt: skip
    def probe() -> bool:
        if not procs[0].alive():
            raise RuntimeError(f"worker exited:\n{procs[0].tail()}")
        ends = [r for r in read_records(directory) if r["kind"] == "task_end" and r["name"] == name]
        return len(ends) >= count

    wait_for(probe, deadline, interval_s=0.2)


def _task_rows(rows: list[dict[str, Any]], name: str, kind: str) -> list[dict[str, Any]]:
    """Tasks with both signals recorded (the first task ran before the module loaded)."""
    starts = {r["job_id"]: r["t"] for r in rows if r["kind"] == "task_start" and r["name"] == name}
    ends = {r["job_id"]: r["t"] for r in rows if r["kind"] == "task_end" and r["name"] == name}
    work: dict[str, float] = {}
    for r in rows:
        if r["kind"] == kind and r.get("job_id"):
            work[r["job_id"]] = work.get(r["job_id"], 0.0) + r["seconds"]
    out = []
    for job_id, start in sorted(starts.items(), key=lambda item: item[1]):
        if job_id in ends and job_id in work:
            wall = ends[job_id] - start
            out.append({"job_id": job_id, "wall": wall, "work": work[job_id],
                        "overhead": wall - work[job_id]})  # fmt: skip
    return out


def _gaps(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Between consecutive trial jobs: task end -> next task start (Celery's hand-off), and
    objective end -> next objective start (what a GPU would sit idle, queue full)."""
    tasks = sorted((r for r in rows if r["kind"] in ("task_start", "task_end")
                    and r["name"] == "hpoq.run_trial"), key=lambda r: r["t"])  # fmt: skip
    handoff = [b["t"] - a["t"] for a, b in zip(tasks, tasks[1:], strict=False)
               if a["kind"] == "task_end" and b["kind"] == "task_start"]  # fmt: skip
    objectives = sorted((r for r in rows if r["kind"] == "objective"), key=lambda r: r["start"])
    idle = [b["start"] - a["end"] for a, b in zip(objectives, objectives[1:], strict=False)]
    return {"handoff": handoff[WARMUP - 1 :], "idle": idle[WARMUP:]}


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overhead p50 of the first and the last fifth of the jobs (the record grows)."""
    fifth = max(1, len(rows) // 5)
    first = summary([r["overhead"] for r in rows[:fifth]], 1000)
    last = summary([r["overhead"] for r in rows[-fifth:]], 1000)
    return {"first_p50_ms": first.get("p50"), "last_p50_ms": last.get("p50"), "jobs": fifth}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 trials and 10 benchmarks")
    parser.add_argument("--trials", type=int, default=None, help="timed trial jobs (150)")
    parser.add_argument("--benchmarks", type=int, default=None, help="timed benchmark jobs (60)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for everything")
    parser.add_argument("--profile", action="store_true",
                        help="pyinstrument call trees of the in-process jobs, on stderr")
    parser.add_argument("--in-process-only", action="store_true", help="skip the worker")
    args = parser.parse_args()
    trials = args.trials or (30 if args.quick else 150)
    benches = args.benchmarks or (10 if args.quick else 60)
    handle_signals()
    deadline = Deadline(args.timeout, "bench_job_overhead")

    with temp_dir("overhead") as tmp, private_redis(tmp) as redis_url:
        output = tmp / "out"
        set_process_env(clean_env(output, redis_url))  # the task module reads them on import
        world = World(output, redis_url)
        try:
            say(f"in-process: {trials} trial jobs (+{WARMUP} warm-up), {benches} benchmark jobs "
                "(+1 warm-up)")  # fmt: skip
            local = in_process(world, tmp / "inproc", trials, benches, deadline, args.profile)
            remote: dict[str, Any] = {"trial": [], "benchmark": [],
                                      "gaps": {"handoff": [], "idle": []}}  # fmt: skip
            if not args.in_process_only:
                say(f"one warm worker: {trials} trial jobs, {benches} benchmark jobs")
                remote = on_worker(world, tmp / "onworker", output, redis_url, trials, benches,
                                   deadline)  # fmt: skip
        finally:
            world.close()

    figures: dict[str, Any] = {"trials": trials, "benchmarks": benches}
    for where, data in (("in_process", local), ("worker", remote)):
        for kind in ("trial", "benchmark"):
            rows = data[kind]
            figures[f"{where}_{kind}_overhead_ms"] = summary([r["overhead"] for r in rows], 1000)
            figures[f"{where}_{kind}_work_ms"] = summary([r["work"] for r in rows], 1000)
            figures[f"{where}_{kind}_growth"] = growth(rows)
    completing = [r for r in local["trial"] if r["variant_complete"]]
    figures["in_process_completing_trial_overhead_ms"] = (
        round(completing[-1]["overhead"] * 1000, 1) if completing else None
    )
    figures["worker_handoff_gap_ms"] = summary(remote["gaps"]["handoff"], 1000)
    figures["worker_idle_gap_ms"] = summary(remote["gaps"]["idle"], 1000)

    for where in ("in_process", "worker"):
        for kind in ("trial", "benchmark"):
            f = figures[f"{where}_{kind}_overhead_ms"]
            if not f["n"]:
                continue
            g = figures[f"{where}_{kind}_growth"]
            w = figures[f"{where}_{kind}_work_ms"]
            say(f"{where:<10} {kind:<9} overhead {fmt(f)}; inside {w['p50']:.1f} ms p50; "
                f"first/last fifth p50 {g['first_p50_ms']}/{g['last_p50_ms']} ms")  # fmt: skip
    say(f"completing trial (variant done, enqueues its benchmark) overhead: "
        f"{figures['in_process_completing_trial_overhead_ms']} ms")  # fmt: skip
    say(f"worker: task end -> next task start {fmt(figures['worker_handoff_gap_ms'])}")
    say(f"worker: objective end -> next objective start {fmt(figures['worker_idle_gap_ms'])}")

    targets = {}
    for where in ("in_process", "worker"):
        for kind in ("trial", "benchmark"):
            f = figures[f"{where}_{kind}_overhead_ms"]
            if not f["n"]:
                continue
            targets[f"{where}_{kind}_p50_ms"] = target(f["p50"], "<=", 100, " ms")
            targets[f"{where}_{kind}_p95_ms"] = target(f["p95"], "<=", 250, " ms")
    say(verdict(targets))
    emit("job_overhead", figures, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
