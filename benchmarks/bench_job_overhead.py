"""Question 1: what a trial job and a benchmark job cost beyond the work inside them.

Overhead = wall time of the job - time inside the objective (trial job) or the runner
(benchmark job). The objective is hpoq's cheap objective and the runner hpoq's cheap runner,
each wrapped to time itself (benchmarks/workloads.py); MLflow logs to SQLite, Optuna to a
file journal, Redis is a private real server: hpoq's local defaults. CPU time is reported
next to wall time: on a shared 2-core machine wall time also counts waiting for a core.

Side by side in one run:
- in-process: the Celery task functions (`run_trial`, `run_benchmark`) called with
  `Task.apply` one after another in one warm process, after warm-up jobs; the variant
  grows by one trial per job, so the last fifth shows how the cost grows with the record;
- one real warm worker (`hpoq worker`: prefork, concurrency 1) fed a full queue: the task
  body's wall time from Celery's task_prerun/task_postrun signals, the objective's own
  time, and the gaps between jobs (what a GPU would wait);
The code is measured as it is in src/: the MLflow store in WAL mode (`make_client`), one
study store per checkpoint config and cached experiment ids per worker (`WorkerContext`).
With --profile, pyinstrument call trees of the in-process jobs go to stderr.

    python benchmarks/bench_job_overhead.py [--quick] [--trials N] [--benchmarks N]
        [--profile] [--in-process-only]

Targets (2-core machine): overhead p50 <= 100 ms, p95 <= 250 ms, and p50 <= 100 ms still
for the last fifth of the jobs (the cost must stay small as the record grows).
"""

from __future__ import annotations

import argparse
import itertools
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
    hpoq_worker_argv,
    private_redis,
    processes,
    profiled,
    read_records,
    run,
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
        from hpoq.core.celery_app import create_app
        from hpoq.core.coordination.connection import connect
        from hpoq.core.coordination.keys import redis_keys
        from hpoq.producer.services import Services

        self.runtime = runtime_for(output)
        self.redis = connect(redis_url)
        self.services = Services(
            self.runtime,
            redis_url,
            self.redis,
            redis_keys(self.runtime),
            create_app(redis_url),
            None,
        )

    def submit(self, experiment: Any) -> list[str]:
        from hpoq.producer.submit import Submitter

        results = Submitter(
            experiment,
            self.runtime,
            self.redis,
            self.services.keys,
            self.services.celery,
            mlflow=self.services.mlflow(),
        ).submit()
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
        report = dispatch(
            experiment,
            self.runtime,
            candidates,
            mode=RunMode.REUSE_IF_EXISTS,
            leases=BenchmarkLeases(self.redis, self.services.keys),
            sender=self.services.celery,
            client=mlflow,
        )
        return report.job_ids

    def close(self) -> None:
        self.services.close()


def make_experiment(root: Path, name: str, n_trials: int) -> Any:
    from hpoq.config.loader import load_experiment

    return load_experiment(
        experiment_file(
            root,
            name=name,
            backbones=(name,),
            n_trials=n_trials,
            objective=TIMED_OBJECTIVE,
            benchmark_extra={"runner": TIMED_RUNNER},
        )
    )


def in_process(
    world: World,
    root: Path,
    name: str,
    trials: int,
    benchmarks: int,
    deadline: Deadline,
    profile: bool = False,
    label: str = "",
) -> dict[str, Any]:
    """Task bodies called one by one in this (warm) process."""
    import benchmarks.workloads as workloads
    from tests.queue_messages import drain

    import hpoq.workers.tasks as tasks

    experiment = make_experiment(root, name, trials + WARMUP)
    world.submit(experiment)
    queued = drain(world.redis, "hpo")
    _run_queue(queued[:WARMUP], tasks.run_trial, "objective", workloads.RECORDS, deadline)
    with profiled(profile, f"[{label}] in-process trial jobs"):
        trial_rows = _run_queue(
            queued[WARMUP:], tasks.run_trial, "objective", workloads.RECORDS, deadline
        )
    # The benchmark the variant's last trial enqueued is the benchmark path's warm-up.
    _run_queue(
        drain(world.redis, "benchmark"), tasks.run_benchmark, "runner", workloads.RECORDS, deadline
    )
    world.enqueue_benchmarks(experiment, benchmarks)
    with profiled(profile, f"[{label}] in-process benchmark jobs"):
        bench_rows = _run_queue(
            drain(world.redis, "benchmark"),
            tasks.run_benchmark,
            "runner",
            workloads.RECORDS,
            deadline,
        )
    done = [r for r in trial_rows if r["variant_complete"]]
    completing = round(done[-1]["overhead"] * 1000, 1) if done else None
    return {"trial": trial_rows, "benchmark": bench_rows, "completing": completing}


def _run_queue(
    messages: list[tuple[str, Any]],
    task: Any,
    kind: str,
    records: list[dict[str, Any]],
    deadline: Deadline,
) -> list[dict[str, Any]]:
    rows = []
    for task_id, payload in messages:
        deadline.check()
        before = len(records)
        cpu = time.process_time()
        start = time.perf_counter()
        result = task.apply(args=[payload], task_id=task_id)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if not result.successful():
            raise RuntimeError(f"{task.name} {task_id} failed: {result.result!r}")
        inner = [r for r in records[before:] if r["kind"] == kind]
        work = sum(r["seconds"] for r in inner)
        work_cpu = sum(r["cpu"] for r in inner)
        rows.append(
            {
                "job_id": task_id,
                "status": result.result.get("status"),
                "wall": wall,
                "work": work,
                "overhead": wall - work,
                "overhead_cpu": cpu - work_cpu,
                "variant_complete": bool(result.result.get("variant_complete")),
            }
        )
    return rows


def on_worker(
    world: World,
    root: Path,
    output: Path,
    redis_url: str,
    trials: int,
    benchmarks: int,
    deadline: Deadline,
) -> dict[str, Any]:
    """One `hpoq worker` with a full queue; timings recorded inside the worker."""
    records_dir = root / "records"
    records_dir.mkdir(parents=True)
    env = clean_env(output, redis_url, HPOQ_BENCH_RECORD_DIR=str(records_dir))
    experiment = make_experiment(root / "worker", "onworker", trials + WARMUP)
    with processes([(hpoq_worker_argv(), env)], root / "logs") as procs:
        wait_ready(world.services.celery, 1, procs, deadline)
        world.submit(experiment)
        # every trial, then the benchmark its variant's last trial enqueues
        _wait_tasks(records_dir, "hpoq.run_benchmark", 1, procs, deadline)
        job_ids = world.enqueue_benchmarks(experiment, benchmarks)
        _wait_tasks(records_dir, "hpoq.run_benchmark", 1 + len(job_ids), procs, deadline)
    rows = read_records(records_dir)
    return {
        # the first task ran before benchmarks.workloads was imported: no start signal
        "trial": _task_rows(rows, "hpoq.run_trial", "objective")[WARMUP - 1 :],
        "benchmark": _task_rows(rows, "hpoq.run_benchmark", "runner")[1:],
        "gaps": _gaps(rows),
    }


def _wait_tasks(
    directory: Path, name: str, count: int, procs: list[Any], deadline: Deadline
) -> None:
    def probe() -> bool:
        if not procs[0].alive():
            raise RuntimeError(f"worker exited:\n{procs[0].tail()}")
        ends = [r for r in read_records(directory) if r["kind"] == "task_end" and r["name"] == name]
        return len(ends) >= count

    wait_for(probe, deadline, interval_s=0.2)


def _task_rows(rows: list[dict[str, Any]], name: str, kind: str) -> list[dict[str, Any]]:
    """Tasks with both signals recorded, oldest first."""
    starts = {r["job_id"]: r for r in rows if r["kind"] == "task_start" and r["name"] == name}
    ends = {r["job_id"]: r for r in rows if r["kind"] == "task_end" and r["name"] == name}
    work: dict[str, tuple[float, float]] = {}
    for r in rows:
        if r["kind"] == kind and r.get("job_id"):
            seconds, cpu = work.get(r["job_id"], (0.0, 0.0))
            work[r["job_id"]] = (seconds + r["seconds"], cpu + r["cpu"])
    out = []
    for job_id, start in sorted(starts.items(), key=lambda item: item[1]["t"]):
        if job_id in ends and job_id in work:
            wall = ends[job_id]["t"] - start["t"]
            cpu = ends[job_id]["cpu"] - start["cpu"]
            out.append(
                {
                    "job_id": job_id,
                    "wall": wall,
                    "work": work[job_id][0],
                    "overhead": wall - work[job_id][0],
                    "overhead_cpu": cpu - work[job_id][1],
                }
            )
    return out


def _gaps(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Between consecutive trial jobs: task end -> next task start (Celery's hand-off), and
    objective end -> next objective start (what a GPU would sit idle, queue full)."""
    tasks = sorted(
        (
            r
            for r in rows
            if r["kind"] in ("task_start", "task_end") and r["name"] == "hpoq.run_trial"
        ),
        key=lambda r: r["t"],
    )
    handoff = [
        b["t"] - a["t"]
        for a, b in itertools.pairwise(tasks)
        if a["kind"] == "task_end" and b["kind"] == "task_start"
    ]
    objectives = sorted((r for r in rows if r["kind"] == "objective"), key=lambda r: r["start"])
    idle = [b["start"] - a["end"] for a, b in itertools.pairwise(objectives)]
    return {"handoff": handoff[WARMUP - 1 :], "idle": idle[WARMUP:]}


def figures_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overhead (wall, CPU), the work inside, and the growth as the variant's record grows
    by one trial per job: overhead p50 of the first and the last fifth of the jobs, and the
    least-squares slope of the CPU overhead per 100 jobs (steadier than wall time here)."""
    fifth = max(1, len(rows) // 5)
    cpu = [r["overhead_cpu"] * 1000 for r in rows]
    return {
        "overhead_ms": summary([r["overhead"] for r in rows], 1000),
        "overhead_cpu_ms": summary([r["overhead_cpu"] for r in rows], 1000),
        "work_ms": summary([r["work"] for r in rows], 1000),
        "first_fifth_p50_ms": summary([r["overhead"] for r in rows[:fifth]], 1000).get("p50"),
        "last_fifth_p50_ms": summary([r["overhead"] for r in rows[-fifth:]], 1000).get("p50"),
        "cpu_slope_ms_per_100_jobs": round(slope(cpu) * 100, 2) if len(cpu) > 2 else None,
    }


def slope(values: list[float]) -> float:
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def measure(
    root: Path,
    redis_url: str,
    trials: int,
    benches: int,
    deadline: Deadline,
    *,
    worker: bool,
    profile: bool,
) -> dict[str, Any]:
    """In-process, then on one worker, in a fresh output directory."""
    output = root / "out"
    set_process_env(clean_env(output, redis_url))  # the task module reads these
    import hpoq.workers.tasks as tasks

    tasks._context = None  # a new output directory: the next job builds a new context
    world = World(output, redis_url)
    runs: dict[str, Any] = {}
    label = "hpoq"
    try:
        say(
            f"[{label}] in-process: {trials} trial jobs (+{WARMUP} warm-up), {benches} "
            "benchmark jobs (+1 warm-up)"
        )
        runs["in_process"] = in_process(
            world, root / "inproc", "inproc", trials, benches, deadline, profile, label
        )
        if worker:
            say(f"[{label}] one warm worker: {trials} trial jobs, {benches} benchmark jobs")
            runs["worker"] = on_worker(
                world, root / "onworker", output, redis_url, trials, benches, deadline
            )
    finally:
        world.close()
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 trials and 10 benchmarks")
    parser.add_argument("--trials", type=int, default=None, help="timed trial jobs (150)")
    parser.add_argument("--benchmarks", type=int, default=None, help="timed benchmark jobs (60)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for everything")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="pyinstrument call trees of the in-process jobs, on stderr",
    )
    parser.add_argument("--in-process-only", action="store_true", help="skip the worker")
    args = parser.parse_args()
    trials = args.trials or (30 if args.quick else 150)
    benches = args.benchmarks or (10 if args.quick else 60)
    deadline = Deadline(args.timeout, "bench_job_overhead")

    with temp_dir("overhead") as tmp, private_redis(tmp) as redis_url:
        runs = measure(
            tmp / "base",
            redis_url,
            trials,
            benches,
            deadline,
            worker=not args.in_process_only,
            profile=args.profile,
        )

    figures: dict[str, Any] = {"trials": trials, "benchmarks": benches}
    targets: dict[str, dict[str, Any]] = {}
    for where, data in runs.items():
        for kind in ("trial", "benchmark"):
            f = figures[f"{where}_{kind}"] = figures_of(data[kind])
            o, c, w = f["overhead_ms"], f["overhead_cpu_ms"], f["work_ms"]
            if not o["n"]:
                continue
            say(
                f"{where:<16} {kind:<9} overhead {fmt(o)}; CPU p50 {c['p50']:.1f} ms; inside "
                f"{w['p50']:.1f} ms p50; first/last fifth p50 {f['first_fifth_p50_ms']}/"
                f"{f['last_fifth_p50_ms']} ms; CPU slope {f['cpu_slope_ms_per_100_jobs']} "
                "ms/100 jobs"
            )
            targets[f"{where}_{kind}_p50_ms"] = target(o["p50"], "<=", 100, " ms")
            targets[f"{where}_{kind}_p95_ms"] = target(o["p95"], "<=", 250, " ms")
            # "and stay small as the record grows": the newest jobs meet the p50 too
            last = f["last_fifth_p50_ms"]
            targets[f"{where}_{kind}_last_fifth_p50_ms"] = target(last, "<=", 100, " ms")
        if "completing" in data:
            figures[f"{where}_completing_trial_overhead_ms"] = data["completing"]
            say(
                f"{where}: the trial that completes its variant (and enqueues its benchmark): "
                f"{data['completing']} ms overhead"
            )
        if "gaps" in data:
            handoff = figures[f"{where}_handoff_gap_ms"] = summary(data["gaps"]["handoff"], 1000)
            idle = figures[f"{where}_idle_gap_ms"] = summary(data["gaps"]["idle"], 1000)
            say(f"{where}: task end -> next task start {fmt(handoff)}")
            say(f"{where}: objective end -> next objective start {fmt(idle)}")
    say(verdict(targets))
    emit("job_overhead", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
