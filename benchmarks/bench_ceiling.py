"""Question 13: how far one cluster goes. Step the offered load (trial jobs per second) up
until the throughput stops rising or the per-job overhead p95 passes 1 s, and name the
component that saturates first.

Everything is real and on 127.0.0.1: a private Redis (coordination, and the broker unless
`--broker-url` names another, e.g. amqp://guest:guest@127.0.0.1:5672//, passed to the
workers and the producer as HPOQ_BROKER_URL), a private PostgreSQL database for the Optuna
storage and another for a real MLflow tracking server (`mlflow server`, artifacts served),
and `--workers` `hpoq worker --slots K` processes running hpoq's cheap objective (no torch)
that takes `--duration` seconds (HPOQ_CHEAP_OBJECTIVE_SLEEP: three steps), timed by
benchmarks/workloads.py.

Each step offers `rate` jobs/s for `--step-seconds`: the producer submits a new variant of
`--trials` trials every trials/rate seconds (`hpoq submit`'s Submitter, force_new), then
waits for the step's jobs to end. Per step: jobs/s achieved (trial jobs ended in the
window / window), per-job overhead (task wall time minus the objective's time) p50/p95,
and the CPU seconds (utime + stime, from /proc) from the step's first submit to its last
job's end, of Redis, the PostgreSQL backends serving the two databases, the MLflow server
(all its processes), the workers (main and pool processes) and this producer: in all, per
job, and as cores used. The run stops at the first step whose throughput rose less than
10% over the best so far while under 90% of its offered load, whose overhead p95 passes
1 s (`--overhead-limit`), or whose jobs do not end within `--drain-seconds` (and when
`--timeout` or `--max-jobs` is spent). First saturated: the host's CPUs when they were
90% busy at that step, else the component using the largest share of what it can use
(Redis: one core; the MLflow server: its worker processes; the rest: the host). From the
CPU per job it also says how many jobs/s each shared service would carry using all it can
use on this host, and which would saturate first: a figure that does not depend on what
else the host ran. Also per job: Redis's commands and the MLflow server's requests.
The JSON line also goes to results/ceiling_<broker>.json (`--out`).

    python benchmarks/bench_ceiling.py [--rates 2,4,8,16,32,64,128,256] [--step-seconds 15]
        [--overhead-limit 1] [--workers 3] [--slots 4] [--duration 0.3] [--trials 12]
        [--mlflow-workers 2] [--max-jobs 4000] [--timeout 330] [--broker-url URL]
        [--postgres-url postgresql://postgres@127.0.0.1:5432] [--out FILE]

Goal (issue 20): 200 trial jobs/s on one machine's services, or an explanation of the
component that prevents it (README, "How far one cluster goes").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    REPO,
    TIMED_OBJECTIVE,
    Deadline,
    clean_env,
    emit,
    experiment_file,
    hpoq_worker_argv,
    postgres_database,
    private_redis_server,
    processes,
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
from hpoq.core.jobs import TASK_RUN_TRIAL

RESULTS = REPO / "benchmarks" / "results"
RISE = 1.10  # a step must beat the best throughput so far by 10% to count as rising
UNDER_OFFERED = 0.90
CLK_TCK = os.sysconf("SC_CLK_TCK")
COMPONENTS = ("redis", "postgres", "mlflow", "workers", "producer")


# ---------------------------------------------------------------- CPU from /proc


@dataclass
class CpuMeter:
    """CPU seconds per component, read from /proc/<pid>/stat (utime + stime, plus the
    children each process has waited for). Processes are told apart by session (every
    server and worker here is started in its own) and PostgreSQL backends by the database
    named in their command line."""

    sessions: dict[int, str]
    databases: tuple[str, ...]
    producer: int = field(default_factory=os.getpid)

    def sample(self) -> dict[str, float]:
        totals = dict.fromkeys(COMPONENTS, 0.0)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
                rest = stat[stat.rindex(")") + 2 :].split()
                ticks = sum(int(v) for v in rest[11:15])
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                name = self._component(int(entry.name), int(rest[3]), comm, entry.path)
            except (OSError, ValueError):
                continue  # ended while read
            if name is not None:
                totals[name] += ticks / CLK_TCK
        return totals

    def _component(self, pid: int, session: int, comm: str, path: str) -> str | None:
        if pid == self.producer:
            return "producer"
        if session in self.sessions:
            return self.sessions[session]
        if comm == "postgres":
            line = Path(path, "cmdline").read_bytes().decode(errors="replace")
            if any(f" {db} " in line for db in self.databases):
                return "postgres"
        return None


@dataclass
class Calls:
    """Requests the shared services answered: Redis's commands processed (INFO), and the
    MLflow server's requests (the lines of its access log)."""

    redis_url: str
    server_log: Path

    def sample(self) -> dict[str, int]:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            commands = int(client.info("stats")["total_commands_processed"])
        finally:
            client.close()
        text = self.server_log.read_text(errors="replace") if self.server_log.exists() else ""
        requests = len(re.findall(r'"(?:GET|POST|PUT|PATCH|DELETE) /', text))
        return {"redis_commands": commands, "mlflow_requests": requests}


def host_busy_s() -> float:
    """CPU seconds the whole host spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


# ---------------------------------------------------------------- the producer


class Producer:
    """`hpoq submit` of one new variant (force_new) at a time, from one warm process, with
    the workers' environment (HPOQ_BROKER_URL included)."""

    def __init__(self, root: Path, output: Path, redis_url: str, trials: int):
        from hpoq.config.base import RunMode
        from hpoq.config.loader import load_experiment
        from hpoq.core.celery_app import create_app
        from hpoq.core.coordination.connection import connect
        from hpoq.core.coordination.keys import redis_keys
        from hpoq.core.job_inputs import prepare_inputs
        from hpoq.producer.submit import Submitter

        experiment = load_experiment(
            experiment_file(
                root, name="ceiling", backbones=("ceiling",), n_trials=trials,
                objective=TIMED_OBJECTIVE,
            )
        )  # fmt: skip
        runtime = runtime_for(output)
        self.client, self.app = connect(redis_url), create_app(redis_url)
        self.submitter = Submitter(experiment, runtime, self.client, redis_keys(runtime), self.app)
        self.inputs = prepare_inputs(experiment)
        self.mode = RunMode.FORCE_NEW
        self.trials = trials

    def submit(self) -> list[str]:
        [result] = self.submitter.submit(mode_override=self.mode, inputs=self.inputs)
        assert result.trials_enqueued == self.trials, result
        return result.job_ids

    def close(self) -> None:
        self.client.close()
        self.app.close()


# ---------------------------------------------------------------- one step


def ended(records: Path) -> dict[str, dict[str, Any]]:
    """Per trial job id: its task start and end (inside the pool process) and objective."""
    jobs: dict[str, dict[str, Any]] = {}
    for row in read_records(records):
        if row["kind"] == "objective":
            jobs.setdefault(row["job_id"], {})["objective_s"] = row["seconds"]
        elif row.get("name") == TASK_RUN_TRIAL:
            jobs.setdefault(row["job_id"], {})[row["kind"]] = row["t"]
    return jobs


def offer(producer: Producer, rate: float, seconds: float, max_jobs: int) -> list[str]:
    """Submit variants of `producer.trials` jobs so `rate` jobs/s arrive for `seconds`."""
    every = producer.trials / rate
    count = max(1, min(round(seconds / every), max_jobs // producer.trials))
    start = time.monotonic()
    job_ids: list[str] = []
    for i in range(count):
        pause = start + i * every - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        job_ids += producer.submit()
    pause = start + count * every - time.monotonic()
    if pause > 0:  # the step lasts its whole nominal window: the offered rate is `rate`
        time.sleep(pause)
    return job_ids


def step(
    producer: Producer,
    records: Path,
    meter: CpuMeter,
    calls: Calls,
    rate: float,
    args: argparse.Namespace,
    max_jobs: int,
    deadline: Deadline,
) -> dict[str, Any]:
    calls0 = calls.sample()
    cpu0, host0, wall0, t0 = meter.sample(), host_busy_s(), time.monotonic(), time.time()
    job_ids = offer(producer, rate, args.step_seconds, max_jobs)
    t1 = time.time()
    window = time.monotonic() - wall0
    offered = len(job_ids) / (t1 - t0)
    wanted = set(job_ids)
    drain_end = time.monotonic() + min(args.drain_seconds, deadline.left())
    while True:
        jobs = ended(records)
        done = [jobs[j] for j in wanted if "task_end" in jobs.get(j, {})]
        if len(done) == len(wanted) or time.monotonic() > drain_end:
            break
        time.sleep(0.5)
    # CPU from the first submit to the step's last job's end: all the step's work.
    cpu1, host1, busy = meter.sample(), host_busy_s(), time.monotonic() - wall0
    calls1 = calls.sample()
    in_window = [j for j in done if t0 <= j["task_end"] <= t1]
    overhead = [
        j["task_end"] - j["task_start"] - j["objective_s"]
        for j in done
        if "task_start" in j and "objective_s" in j
    ]
    cpu = {name: cpu1[name] - cpu0[name] for name in COMPONENTS}
    return {
        "offered_jobs_per_s": round(offered, 2),
        "submitted": len(job_ids),
        "ended": len(done),
        "drained": len(done) == len(wanted),
        "window_s": round(window, 2),
        "jobs_per_s": round(len(in_window) / window, 2),
        "overhead_ms": summary(overhead, 1000, 1),
        "cpu_s": {name: round(v, 2) for name, v in cpu.items()},
        "cpu_ms_per_job": {n: round(1000 * v / max(1, len(done)), 1) for n, v in cpu.items()},
        "cores": {name: round(v / busy, 3) for name, v in cpu.items()},
        "calls_per_job": {
            name: round((calls1[name] - calls0[name]) / max(1, len(done)), 1) for name in calls0
        },
        "host_cores_busy": round((host1 - host0) / busy, 3),
    }


def projected(row: dict[str, Any], mlflow_workers: int) -> dict[str, float]:
    """Jobs/s each shared service would carry at full use of what it can use on this host,
    from its CPU per job: Redis runs commands on one thread, the MLflow server on its
    worker processes, PostgreSQL on every core. Workers scale out, so they are left out."""
    cpus = os.cpu_count() or 1
    capacity = {"redis": 1, "mlflow": min(mlflow_workers, cpus), "postgres": cpus}
    per_job = row["cpu_ms_per_job"]
    return {
        name: round(1000 * cores / per_job[name], 1)
        for name, cores in capacity.items()
        if per_job[name] > 0
    }


def utilisation(row: dict[str, Any], mlflow_workers: int) -> dict[str, float]:
    """Cores used over cores the component can use: Redis runs commands on one thread, the
    MLflow server on its worker processes, the rest on every core of the host."""
    cpus = os.cpu_count() or 1
    capacity = {"redis": 1, "mlflow": min(mlflow_workers, cpus)}
    return {
        name: round(row["cores"][name] / capacity.get(name, cpus), 3)
        for name in ("redis", "postgres", "mlflow", "workers")
    }


def stop_reason(row: dict[str, Any], best: float, overhead_limit_s: float) -> str | None:
    if row["overhead_ms"].get("p95", 0.0) > overhead_limit_s * 1000:
        return f"overhead p95 above {overhead_limit_s:g} s"
    if not row["drained"]:
        return "the step's jobs did not end within --drain-seconds"
    if row["jobs_per_s"] < UNDER_OFFERED * row["offered_jobs_per_s"] and (
        row["jobs_per_s"] < RISE * best
    ):
        return "throughput stopped rising"
    return None


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2,4,8,16,32,64,128,256", help="jobs/s per step")
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument(
        "--overhead-limit", type=float, default=1.0, help="stop once overhead p95 passes it (s)"
    )
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=3, help="hpoq worker processes")
    parser.add_argument("--slots", type=int, default=4, help="pool processes per worker")
    parser.add_argument("--duration", type=float, default=0.3, help="objective seconds")
    parser.add_argument("--trials", type=int, default=12, help="trials per variant")
    parser.add_argument("--mlflow-workers", type=int, default=2)
    parser.add_argument("--max-jobs", type=int, default=4000)
    parser.add_argument("--timeout", type=float, default=330.0, help="the whole run, seconds")
    parser.add_argument("--broker-url", default=None, help="default: the bench's own Redis")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/ceiling_<broker>.json"
    )
    args = parser.parse_args()
    deadline = Deadline(args.timeout, "bench_ceiling")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    with (
        temp_dir("ceiling") as tmp,
        private_redis_server(tmp) as redis,
        postgres_database(args.postgres_url, "hpoq_ceiling_optuna") as optuna_db,
        postgres_database(args.postgres_url, "hpoq_ceiling_mlflow") as mlflow_db,
    ):
        if optuna_db is None or mlflow_db is None:
            say(f"no PostgreSQL at {args.postgres_url}: nothing measured")
            return 2
        from tests.integration.servers import MlflowServer

        broker_url = args.broker_url or redis.url
        server = MlflowServer(
            tmp / "mlflow",
            backend_store_uri=mlflow_db.replace("postgresql://", "postgresql+psycopg://", 1),
            workers=args.mlflow_workers,
        )
        began = time.monotonic()
        server.start(timeout_s=min(240.0, deadline.left()))
        try:
            say(f"MLflow server on PostgreSQL up in {time.monotonic() - began:.1f} s")
            steps, reason = measure(
                tmp, redis.url, redis.pid, broker_url, optuna_db, mlflow_db, server, args,
                rates, deadline,
            )  # fmt: skip
        finally:
            server.stop()

    rows = [s for s in steps if s["jobs_per_s"] is not None]
    ceiling = max((s["jobs_per_s"] for s in rows), default=0.0)
    stopped = rows[-1] if rows else None
    shares = utilisation(stopped, args.mlflow_workers) if stopped else {}
    host_busy = stopped["host_cores_busy"] / (os.cpu_count() or 1) if stopped else 0.0
    # On a host whose cores are all busy, the host saturated first; the service that would
    # saturate first on it is the one with the lowest projected ceiling.
    services = projected(stopped, args.mlflow_workers) if stopped else {}
    limiting = min(services, key=lambda k: services[k]) if services else None
    busiest = max(shares, key=lambda k: shares[k]) if shares else None
    first = f"host CPU ({os.cpu_count()} cores)" if host_busy >= 0.9 else busiest
    for s in steps:
        o = s["overhead_ms"]
        say(
            f"offered {s['offered_jobs_per_s']:6.1f} jobs/s -> {s['jobs_per_s']:6.1f} jobs/s; "
            f"overhead p50 {o.get('p50', float('nan')):.0f} ms, p95 "
            f"{o.get('p95', float('nan')):.0f} ms; cores: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s["cores"].items())
            + f"; host {s['host_cores_busy']:.2f}"
        )
    say(
        f"ceiling {ceiling:.1f} trial jobs/s ({reason}); first saturated: {first}; host CPUs "
        f"busy {host_busy:.0%}; cores used over what each can use: {shares}"
    )
    if stopped:
        say(f"CPU ms per job at the last step: {stopped['cpu_ms_per_job']}")
        say(f"each service alone on this host would carry (jobs/s): {services}: {limiting} first")
    targets = {"jobs_per_s": target(ceiling, ">=", 200, " jobs/s")}
    say(verdict(targets))
    figures = {
        "ceiling_jobs_per_s": ceiling,
        "stopped_because": reason,
        "first_saturated": first,
        "utilisation_at_stop": shares,
        "service_ceilings_jobs_per_s": services,
        "first_service_to_saturate": limiting,
        "host_cpus_busy_at_stop": round(host_busy, 3),
        "steps": steps,
        "setup": {
            "workers": args.workers,
            "slots": args.slots,
            "duration_s": args.duration,
            "trials_per_variant": args.trials,
            "mlflow_workers": args.mlflow_workers,
            "broker": "redis" if args.broker_url is None else args.broker_url.split(":", 1)[0],
            "step_seconds": args.step_seconds,
        },
    }
    doc = emit("ceiling", figures, targets)
    out = args.out or RESULTS / f"ceiling_{figures['setup']['broker']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, default=str) + "\n", encoding="utf-8")
    return 0


def measure(
    tmp: Path,
    redis_url: str,
    redis_pid: int | None,
    broker_url: str,
    optuna_db: str,
    mlflow_db: str,
    server: Any,
    args: argparse.Namespace,
    rates: list[float],
    deadline: Deadline,
) -> tuple[list[dict[str, Any]], str]:
    """Start the workers, warm them up, then step the load up until it stops."""
    from hpoq.core.celery_app import create_app

    output, records = tmp / "out", tmp / "records"
    records.mkdir(parents=True)
    env = clean_env(
        output,
        redis_url,
        HPOQ_BROKER_URL=broker_url,
        HPOQ_OPTUNA_STORAGE=optuna_db.replace("postgresql://", "postgresql+psycopg://", 1),
        MLFLOW_TRACKING_URI=server.uri,
        HPOQ_BENCH_RECORD_DIR=str(records),
        HPOQ_CHEAP_OBJECTIVE_SLEEP=str(args.duration / 3),
    )
    set_process_env(env)
    argv = [
        [*hpoq_worker_argv(queues="hpo", index=i), "--slots", str(args.slots)]
        for i in range(args.workers)
    ]
    control = create_app(redis_url)  # the broker: HPOQ_BROKER_URL, as in the workers
    producer: Producer | None = None
    steps: list[dict[str, Any]] = []
    reason = "every offered rate was met"
    try:
        with processes([(a, env) for a in argv], tmp / "logs") as procs:
            began = time.monotonic()
            wait_ready(control, args.workers, procs, deadline)
            say(
                f"{args.workers} workers x {args.slots} slots up in "
                f"{time.monotonic() - began:.1f} s"
            )
            sessions = {p.pid: "workers" for p in procs}
            sessions.update(
                {pid: name for pid, name in ((redis_pid, "redis"), (server.pid, "mlflow")) if pid}
            )
            meter = CpuMeter(sessions, (optuna_db.rsplit("/", 1)[1], mlflow_db.rsplit("/", 1)[1]))
            calls = Calls(redis_url, server.directory / "server.log")
            producer = Producer(tmp / "exp", output, redis_url, args.trials)
            warm_s = warm_up(producer, records, args.workers * args.slots, deadline)
            say(f"warm-up: every pool process ran a job ({warm_s:.1f} s)")
            best, left = 0.0, args.max_jobs
            for rate in rates:
                if deadline.left() < args.step_seconds + 10 or left < args.trials:
                    reason = "time or job budget spent"
                    break
                row = {
                    "rate": rate,
                    **step(producer, records, meter, calls, rate, args, left, deadline),
                }
                steps.append(row)
                left -= row["submitted"]
                say(f"step {rate:g} jobs/s: {json.dumps(row)}")
                why = stop_reason(row, best, args.overhead_limit)
                best = max(best, row["jobs_per_s"])
                if why is not None:
                    reason = why
                    break
    finally:
        if producer is not None:
            producer.close()
        control.close()
    return steps, reason


def warm_up(producer: Producer, records: Path, slots: int, deadline: Deadline) -> float:
    """Two jobs per pool process, all at once, and wait for them all: a pool process's
    first job imports MLflow's and Optuna's storage code and opens its connections (seconds
    of CPU each), which is start-up, not load."""
    began = time.monotonic()
    wanted: set[str] = set()
    while len(wanted) < 2 * slots:
        wanted.update(producer.submit())

    def all_ended() -> bool:
        jobs = ended(records)
        return all("task_end" in jobs.get(j, {}) for j in wanted)

    wait_for(all_ended, deadline, interval_s=0.5)
    return time.monotonic() - began


if __name__ == "__main__":
    os.chdir(REPO)
    run(main)
