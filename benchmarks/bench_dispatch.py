"""Question 2: what hpoq's Celery settings and task wrapper cost per job, against bare Celery.

Two workers on one private Redis, started together and measured in alternation (so load
from elsewhere falls on both alike), each one process (prefork, concurrency 1):
- hpoq: a no-op task on an app from `hpoq.core.celery_app.create_app` (hpoq's settings:
  task events, the STARTED state and extended results off; acks_late, prefetch 1), started
  with `hpoq worker`'s own command line (no `--task-events`); the task validates a real
  TrialJob payload with `parse_job` (benchmarks/noop_hpoq.py);
- bare: a no-op task on `Celery(broker=redis, backend=redis)` with default settings
  (benchmarks/noop_bare.py), sent the same payload.

Figures: enqueue-to-start latency (send -> first line of the task) and round trip
(send -> result back) over sequential jobs; no-op jobs per second with a full queue
(K sends, then every result); enqueue rate (sends per second); the cost of `parse_job` and
of `hpoq submit` per job. With --ablate, more hpoq workers measured alongside, each with
settings changed from hpoq's default: task events on (`--task-events`, as while Flower
watches: Flower switches worker events on by itself), the STARTED state and extended
results on, everything hpoq had on before (events, sent events, STARTED, extended results),
and early ack with Celery's default prefetch (what acks_late and prefetch 1 cost).

    python benchmarks/bench_dispatch.py [--quick] [--jobs N] [--burst K] [--ablate]

Target: hpoq at most 1.2x bare Celery (latency p50, round trip p50, time per job with a full
queue).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

from common import (
    Deadline,
    clean_env,
    emit,
    experiment_file,
    fmt,
    private_redis,
    processes,
    quantile,
    ratio,
    run,
    say,
    summary,
    target,
    temp_dir,
    verdict,
    wait_ready,
)

# Relative to hpoq's default (create_app: every event, the STARTED state and extended
# results off). `worker_send_task_events` also puts `--task-events` on the command line.
ABLATIONS: dict[str, dict[str, Any]] = {
    # worker task events on, as while Flower watches (it broadcasts `enable_events`)
    "hpoq_task_events": {"worker_send_task_events": True},
    # the result-store writes: the STARTED state and extended results (the payload echoed)
    "hpoq_started_extended": {"task_track_started": True, "result_extended": True},
    # hpoq's settings before events went off: all of the above and sent events
    "hpoq_former_default": {
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_extended": True,
    },
    # ack on receipt with Celery's default prefetch: what acks_late + prefetch 1 cost
    "hpoq_early_ack": {"task_acks_late": False, "worker_prefetch_multiplier": 4},
}


class Variant:
    """One worker and the client that feeds it."""

    def __init__(self, name: str, redis_url: str, overrides: dict[str, Any] | None) -> None:
        import benchmarks.noop_bare as bare
        import benchmarks.noop_hpoq as noop

        self.name = name
        self.bare = overrides is None
        self.overrides = overrides or {}
        if self.bare:
            self.app = bare.build_app(redis_url)
            self.task, self.queue = bare.BARE_TASK, f"bare-{uuid.uuid4().hex[:6]}"
        else:
            self.app = noop.build_app(redis_url, self.overrides)
            self.task = noop.NOOP_TASK
            self.queue = f"noop-{name}"
        # Client side only, never the workers: when the script ends (Redis stopped), a
        # result dropped late gives up its unsubscribe at once instead of retrying for 20 s.
        options = dict(self.app.conf.result_backend_transport_options or {})
        options["retry_policy"] = {"max_retries": 0}
        self.app.conf.result_backend_transport_options = options

    def argv(self) -> list[str]:
        from hpoq.producer.commands.worker_cmd import worker_argv

        if self.bare:
            return [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.noop_bare:app",
                "worker",
                "--queues",
                self.queue,
                "--concurrency",
                "1",
                "--pool",
                "prefork",
                "--hostname",
                f"{self.name}@%h",
                "--loglevel",
                "WARNING",
                "--without-mingle",
            ]
        task_events = bool(self.overrides.get("worker_send_task_events", False))
        argv = worker_argv(None, self.queue, 1, "WARNING", task_events=task_events)
        argv[argv.index("-A") + 1] = "benchmarks.noop_hpoq:app"
        argv[argv.index("--hostname") + 1] = f"{self.name}@%h"
        assert ("--task-events" in argv) == task_events, argv
        if "worker_prefetch_multiplier" in self.overrides:
            at = argv.index("--prefetch-multiplier") + 1
            argv[at] = str(self.overrides["worker_prefetch_multiplier"])
        return argv

    def env(self, output: Path, redis_url: str) -> dict[str, str]:
        return clean_env(output, redis_url, HPOQ_BENCH_CONF=json.dumps(self.overrides))

    def send(self, payload: dict[str, Any]) -> Any:
        # exactly how the producer sends a trial job (hpoq.producer.submit)
        return self.app.send_task(
            self.task, args=[payload], queue=self.queue, task_id=f"trial-{uuid.uuid4().hex}"
        )

    def round_trip(self, payload: dict[str, Any]) -> tuple[float, float]:
        sent = time.time()
        result = self.send(payload).get(timeout=30)
        done = time.time()
        return result["started"] - sent, done - sent

    def burst(self, payload: dict[str, Any], count: int) -> dict[str, float]:
        first = time.time()
        pending = [self.send(payload) for _ in range(count)]
        sent = time.time()
        started = [r.get(timeout=60)["started"] for r in pending]
        done = time.time()
        return {
            "jobs_per_s": count / (done - first),
            "enqueue_per_s": count / (sent - first),
            "worker_jobs_per_s": (count - 1) / (max(started) - min(started)),
        }

    def close(self) -> None:
        self.app.close()


def release_results(apps: list[Any]) -> None:
    """Let go of pending AsyncResults (an interrupted `get`) while Redis still answers: each
    one unsubscribes when it is dropped, and against a stopped Redis Celery retries that for
    ~20 s. Uses the result backend's pending-results table (Celery internals, best effort)."""
    exc = sys.exc_info()[1]
    if exc is not None:
        traceback.clear_frames(exc.__traceback__)
    for app in apps:
        backend = app.backend
        with suppress(Exception):
            for mapping in backend._pending_results:
                for result in list(mapping.values()):
                    backend.remove_pending_result(result)
    gc.collect()


def trial_payload(root: Path) -> dict[str, Any]:
    """A real TrialJob payload (the whole resolved experiment rides along, as in hpoq, its
    data published by content to a local MLflow store)."""
    from common import runtime_for
    from hpoq.config.loader import load_experiment
    from hpoq.core.job_inputs import content_store, portable_experiment
    from hpoq.core.jobs import TrialJob, new_job_id
    from hpoq.core.tracking import make_client

    runtime = runtime_for(root / "outputs")
    loaded = load_experiment(experiment_file(root, name="dispatch"))
    store = content_store(runtime, make_client(runtime.mlflow_uri()))
    job = TrialJob(
        job_id=new_job_id("trial"),
        experiment=portable_experiment(loaded, store),
        backbone="tiny",
        study_name="hpo_tiny",
        variant=1,
    )
    return job.to_payload()


def parse_cost(payload: dict[str, Any], count: int = 300) -> dict[str, Any]:
    """What `parse_job` (pydantic validation of the whole experiment) costs per job."""
    from hpoq.core.jobs import TrialJob, parse_job

    times = []
    for _ in range(count):
        start = time.perf_counter()
        parse_job(payload, TrialJob)
        times.append(time.perf_counter() - start)
    return summary(times, 1000, 3)


def submit_rate(root: Path, redis_url: str, count: int) -> dict[str, float]:
    """`hpoq submit` of one variant with `count` trials: the producer's whole path (plan,
    study, budget bookkeeping under its lock, one send per job) on queue `hpo`, which no
    worker of this script reads."""
    from common import runtime_for
    from hpoq.config.loader import load_experiment
    from hpoq.core.celery_app import create_app
    from hpoq.core.coordination.connection import connect
    from hpoq.core.coordination.keys import redis_keys
    from hpoq.producer.submit import Submitter

    experiment = load_experiment(experiment_file(root, name="submit", n_trials=count))
    runtime = runtime_for(root / "out")
    client, app = connect(redis_url), create_app(redis_url)
    try:
        start = time.perf_counter()
        [result] = Submitter(experiment, runtime, client, redis_keys(runtime), app).submit()
        seconds = time.perf_counter() - start
    finally:
        client.close()
        app.close()
    assert result.trials_enqueued == count, result
    return {"jobs": count, "seconds": round(seconds, 3), "jobs_per_s": round(count / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 round trips, bursts of 200")
    parser.add_argument("--jobs", type=int, default=None, help="sequential jobs each (1000)")
    parser.add_argument("--burst", type=int, default=None, help="jobs per burst (500)")
    parser.add_argument("--bursts", type=int, default=3, help="bursts per variant")
    parser.add_argument(
        "--ablate", action="store_true", help="also hpoq with events and other settings on"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    jobs = args.jobs or (200 if args.quick else 1000)
    burst = args.burst or (200 if args.quick else 500)
    deadline = Deadline(args.timeout, "bench_dispatch")

    with temp_dir("dispatch") as tmp, private_redis(tmp) as redis_url:
        payload = trial_payload(tmp / "exp")
        parse = parse_cost(payload)
        submit = submit_rate(tmp / "submit", redis_url, burst)
        say(
            f"parse_job of a TrialJob: {fmt(parse)}; hpoq submit of {burst} trial jobs: "
            f"{submit['seconds']} s ({submit['jobs_per_s']} jobs/s)"
        )
        specs: dict[str, dict[str, Any] | None] = {"hpoq": {}, "bare": None}
        if args.ablate:
            specs.update(ABLATIONS)
        variants = [Variant(name, redis_url, spec) for name, spec in specs.items()]
        output = tmp / "out"
        try:
            latency: dict[str, list[float]] = {v.name: [] for v in variants}
            trip: dict[str, list[float]] = {v.name: [] for v in variants}
            bursts: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
            commands = [(v.argv(), v.env(output, redis_url)) for v in variants]
            with processes(commands, tmp / "logs", [v.name for v in variants]) as started:
                wait_ready(variants[0].app, len(variants), started, deadline)
                say(f"{len(variants)} workers up; payload {len(json.dumps(payload))} bytes")
                for _ in range(20):  # warm-up: pool child imports, connections
                    for v in variants:
                        v.round_trip(payload)
                for _ in range(jobs):
                    deadline.check()
                    for v in variants:
                        late, rtt = v.round_trip(payload)
                        latency[v.name].append(late)
                        trip[v.name].append(rtt)
                for _ in range(args.bursts):
                    for v in variants:
                        deadline.check()
                        bursts[v.name].append(v.burst(payload, burst))
        finally:
            release_results([v.app for v in variants])
            for v in variants:
                v.close()

    figures: dict[str, Any] = {
        "jobs": jobs,
        "burst": burst,
        "payload_bytes": len(json.dumps(payload)),
        "parse_job_ms": parse,
        "submit": submit,
    }
    for v in variants:
        rates = bursts[v.name]
        figures[v.name] = {
            "enqueue_to_start_ms": summary(latency[v.name], 1000, 3),
            "round_trip_ms": summary(trip[v.name], 1000, 3),
            "jobs_per_s": round(quantile([r["jobs_per_s"] for r in rates], 0.5), 1),
            "worker_jobs_per_s": round(quantile([r["worker_jobs_per_s"] for r in rates], 0.5), 1),
            "enqueue_per_s": round(quantile([r["enqueue_per_s"] for r in rates], 0.5), 1),
        }
        f = figures[v.name]
        say(
            f"{v.name:<21} enqueue->start {fmt(f['enqueue_to_start_ms'])}; round trip "
            f"{fmt(f['round_trip_ms'])}; {f['jobs_per_s']} jobs/s with a full queue "
            f"({f['worker_jobs_per_s']}/s seen in the worker); {f['enqueue_per_s']} sends/s"
        )
    b = figures["bare"]
    for v in variants:
        if v.bare:
            continue
        f = figures[v.name]
        f["settings"] = v.overrides
        f["vs_bare"] = {
            "latency_p50": ratio(f["enqueue_to_start_ms"]["p50"], b["enqueue_to_start_ms"]["p50"]),
            "round_trip_p50": ratio(f["round_trip_ms"]["p50"], b["round_trip_ms"]["p50"]),
            "time_per_job": ratio(b["jobs_per_s"], f["jobs_per_s"]),  # >1: slower than bare
        }
        if v.name != "hpoq":
            r = f["vs_bare"]
            say(
                f"{v.name:<21} / bare: latency p50 x{r['latency_p50']}, round trip p50 "
                f"x{r['round_trip_p50']}, time per job at full queue x{r['time_per_job']}"
            )
    h = figures["hpoq"]
    figures["latency_p50_ratio"] = ratio(
        h["enqueue_to_start_ms"]["p50"], b["enqueue_to_start_ms"]["p50"]
    )
    figures["latency_p95_ratio"] = ratio(
        h["enqueue_to_start_ms"]["p95"], b["enqueue_to_start_ms"]["p95"]
    )
    figures["round_trip_p50_ratio"] = ratio(h["round_trip_ms"]["p50"], b["round_trip_ms"]["p50"])
    figures["throughput_ratio"] = ratio(b["jobs_per_s"], h["jobs_per_s"])  # >1: hpoq slower
    say(
        f"hpoq / bare: latency p50 x{figures['latency_p50_ratio']}, p95 "
        f"x{figures['latency_p95_ratio']}, round trip p50 x{figures['round_trip_p50_ratio']}, "
        f"time per job at full queue x{figures['throughput_ratio']}"
    )
    targets = {
        "latency_p50_ratio": target(figures["latency_p50_ratio"], "<=", 1.2),
        "round_trip_p50_ratio": target(figures["round_trip_p50_ratio"], "<=", 1.2),
        "throughput_ratio": target(figures["throughput_ratio"], "<=", 1.2),
    }
    say(verdict(targets))
    emit("dispatch", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
