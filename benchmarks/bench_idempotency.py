"""Question 5: "is this key already measured?" for 1,000 candidate keys against an MLflow
store holding 10,000 benchmark runs: hpoq's batched check against one query per key.

The store (SQLite) is seeded with 10,000 FINISHED benchmark runs tagged as hpoq tags them
(`benchmark_key` and the process tags), plus noise: 500 FAILED runs (which must not count)
and 500 FINISHED runs under another benchmark config (another key suffix). Of the 1,000
candidates, 500 are measured and 500 are not (100 of those have only a FAILED run).

- batched: `hpoq.core.benchmark_dispatch.measured_keys` (what `hpoq benchmark` and
  `hpoq run` call: one paged MLflow query on the key suffix, then the disk cache for the
  rest), and `hpoq.core.benchmark_index.finished_keys` (the MLflow part alone);
- one query per key: `query_runs_by_tags(client, [exp], {"benchmark_key": key})`, the
  query a benchmark job runs for its own key before measuring.
Both must find the same keys. Seeding uses bulk inserts into MLflow's own tables through
its SqlAlchemyStore session and models (as bench_retrieval.py does); the client API
(create_run with tags, log_batch, set_terminated) is timed on a few runs for comparison.

    python benchmarks/bench_idempotency.py [--quick] [--runs 10000] [--keys 1000]

With --quick the per-key baseline runs on 100 of the 1,000 keys and is scaled up (said so
in the output). Target: batched >= 50x faster than one query per key.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from typing import Any

from bench_retrieval import CHUNK, _run_row
from common import (
    Deadline,
    emit,
    experiment_file,
    ratio,
    run,
    runtime_for,
    say,
    target,
    temp_dir,
    verdict,
)

BACKBONES = ["alpha", "beta", "gamma", "delta"]


def make_key(suffix: str, rng: random.Random) -> str:
    backbone = rng.choice(BACKBONES)
    variant = rng.randint(1, 30)
    study = f"hpo_{backbone}" if variant == 1 else f"hpo_{backbone}_v{variant}"
    return f"{backbone}:{study}:{uuid.uuid4().hex}:{uuid.uuid4().hex[:16]}{suffix}"


def run_tags(experiment: Any, key: str, fence: int = 1) -> dict[str, str]:
    """The tags hpoq's benchmark job puts on its run (hpoq/workers/benchmark_job.py)."""
    t = experiment.tags
    backbone, study = key.split(":")[:2]
    return {
        "benchmark_key": key,
        t.benchmark.fencing_token: str(fence),
        t.process.stage: "benchmark",
        t.process.backbone: backbone,
        t.process.variant: study.rsplit("_v", 1)[-1] if "_v" in study else "1",
        t.process.study_name: study,
        t.process.trial_number: "0",
        t.process.experiment: experiment.name,
        t.grouping.trial_key_hash: key.split(":")[3],
        "hpoq.hpo_run_id": key.split(":")[2],
        "hpoq.worker": "bench-host",
        "mlflow.runName": f"bench-{study}-trial-0",
    }


def seed(uri: str, experiment: Any, runs: list[tuple[str, str]]) -> tuple[str, float]:
    """(key, status) runs inserted in bulk; returns the experiment id and the seconds."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    start = time.perf_counter()
    store = SqlAlchemyStore(uri, "file:///tmp/hpoq-bench-artifacts")
    experiment_id = str(store.create_experiment(experiment.benchmark_experiment_name))
    run_rows, tag_rows, metric_rows = [], [], []
    for i, (key, status) in enumerate(runs):
        run_id = uuid.uuid4().hex
        run_rows.append(_run_row(run_id, int(experiment_id), status, i))
        tag_rows += [
            {"key": k, "value": v, "run_uuid": run_id} for k, v in run_tags(experiment, key).items()
        ]
        for name in ("fp32_bs1_latency_p50_ms", "fp32_bs1_latency_p95_ms"):
            metric_rows.append(
                {
                    "key": name,
                    "value": 1.0 + (i % 7),
                    "timestamp": i,
                    "step": 0,
                    "is_nan": False,
                    "run_uuid": run_id,
                }
            )
    with store.ManagedSessionMaker(read_only=False) as session:
        for table, rows in (
            (SqlRun.__table__, run_rows),
            (SqlTag.__table__, tag_rows),
            (SqlMetric.__table__, metric_rows),
            (SqlLatestMetric.__table__, metric_rows),
        ):
            for at in range(0, len(rows), CHUNK):
                session.execute(table.insert(), rows[at : at + CHUNK])
    store.engine.dispose()
    return experiment_id, time.perf_counter() - start


def client_api_seconds_per_run(uri: str, experiment: Any, count: int, suffix: str) -> float:
    """What the client API costs per run (create_run with tags, log_batch, set_terminated)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(f"{experiment.benchmark_experiment_name}-api")
    rng = random.Random(1)
    start = time.perf_counter()
    for _ in range(count):
        run = client.create_run(experiment_id, tags=run_tags(experiment, make_key(suffix, rng)))
        metrics = [Metric("fp32_bs1_latency_p50_ms", 1.0, 0, 0)]
        client.log_batch(run.info.run_id, metrics=metrics)
        client.set_terminated(run.info.run_id, "FINISHED")
    return (time.perf_counter() - start) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="per-key baseline on 100 keys, one timed repeat"
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=None, help="timed batched checks (3)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    deadline = Deadline(args.timeout, "bench_idempotency")
    rng = random.Random(0)

    with temp_dir("idempotency") as tmp:
        from mlflow.tracking import MlflowClient

        from hpoq.config.loader import load_experiment
        from hpoq.core.benchmark_dispatch import measured_keys
        from hpoq.core.benchmark_index import finished_keys, key_suffix
        from hpoq.core.mlflow_queries import query_runs_by_tags

        experiment = load_experiment(experiment_file(tmp / "exp", name="idem"))
        runtime = runtime_for(tmp / "out")
        suffix = key_suffix(experiment)
        other_suffix = ":0000000000000000:ffffffffffffffff"
        uri = f"sqlite:///{tmp}/mlflow.db"

        measured = [make_key(suffix, rng) for _ in range(args.runs)]
        failed_only = [make_key(suffix, rng) for _ in range(args.keys // 10)]
        runs = [(k, "FINISHED") for k in measured]
        runs += [(k, "FAILED") for k in failed_only]
        runs += [
            (make_key(suffix, rng), "FAILED") for _ in range(args.runs // 20 - len(failed_only))
        ]
        runs += [(make_key(other_suffix, rng), "FINISHED") for _ in range(args.runs // 20)]
        rng.shuffle(runs)
        experiment_id, seed_s = seed(uri, experiment, runs)
        api_s = client_api_seconds_per_run(uri, experiment, 30, suffix)
        say(
            f"seeded {len(runs)} runs ({args.runs} FINISHED with this suffix) in {seed_s:.1f} s "
            f"by bulk insert; the client API takes {api_s * 1000:.0f} ms per run "
            f"(~{api_s * len(runs) / 60:.1f} min for the same store)"
        )

        half = args.keys // 2
        unmeasured = failed_only + [make_key(suffix, rng) for _ in range(half - len(failed_only))]
        candidates = rng.sample(measured, half) + unmeasured
        rng.shuffle(candidates)
        expected = set(candidates) & set(measured)
        client = MlflowClient(tracking_uri=uri)

        def batched() -> set[str]:
            return measured_keys(experiment, runtime, client, candidates)

        def mlflow_only() -> set[str]:
            found = finished_keys(client, experiment.benchmark_experiment_name, suffix)
            return set(candidates) & set(found)

        timings: dict[str, float] = {}
        for name, fn in (("measured_keys", batched), ("finished_keys", mlflow_only)):
            assert fn() == expected, f"{name} disagrees"  # warm-up and check
            times = []
            for _ in range(repeats):
                deadline.check()
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            timings[name] = statistics.median(times)

        from benchmarks.proposed_fixes import dispose_engines, finished_keys_sql

        def proposed() -> set[str]:
            return set(finished_keys_sql(uri, experiment_id, candidates))

        try:
            assert proposed() == expected, "the proposed SQL check disagrees"
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                proposed()
                times.append(time.perf_counter() - start)
            timings["proposed_sql"] = statistics.median(times)
        finally:
            dispose_engines()

        sample = candidates if not args.quick else candidates[: max(10, args.keys // 10)]
        start = time.perf_counter()
        found_one_by_one = set()
        for key in sample:
            deadline.check()
            if next(
                iter(query_runs_by_tags(client, [experiment_id], {"benchmark_key": key})), None
            ):
                found_one_by_one.add(key)
        per_key_s = (time.perf_counter() - start) / len(sample)
        assert found_one_by_one == expected & set(sample), "per-key queries disagree"

    per_key_total = per_key_s * len(candidates)
    figures = {
        "runs_in_store": len(runs),
        "finished_runs_with_suffix": args.runs,
        "candidate_keys": len(candidates),
        "measured_candidates": len(expected),
        "seed_s": round(seed_s, 2),
        "seed_method": "bulk INSERT through MLflow's SqlAlchemyStore session and dbmodels",
        "client_api_ms_per_run": round(api_s * 1000, 1),
        "measured_keys_s": round(timings["measured_keys"], 3),
        "finished_keys_s": round(timings["finished_keys"], 3),
        "per_key_query_ms": round(per_key_s * 1000, 2),
        "per_key_keys_timed": len(sample),
        "per_key_total_s": round(per_key_total, 2),
        "per_key_extrapolated": len(sample) < len(candidates),
        "speedup": ratio(per_key_total, timings["measured_keys"], 1),
        "proposed_sql_ms": round(timings["proposed_sql"] * 1000, 1),
        "proposed_sql_speedup": ratio(per_key_total, timings["proposed_sql"], 1),
    }
    say(
        f"batched measured_keys: {timings['measured_keys'] * 1000:.0f} ms "
        f"(finished_keys alone {timings['finished_keys'] * 1000:.0f} ms); one query per key: "
        f"{per_key_s * 1000:.1f} ms x {len(candidates)} = {per_key_total:.1f} s"
        f"{f' (timed on {len(sample)} keys, scaled)' if figures['per_key_extrapolated'] else ''}"
        f" -> batched is x{figures['speedup']}"
    )
    say(
        f"proposed fix (benchmarks/proposed_fixes.py finished_keys_sql: the candidate keys "
        f"only, IN (...) on MLflow's tables): {figures['proposed_sql_ms']} ms "
        f"-> x{figures['proposed_sql_speedup']} against one query per key"
    )
    targets = {"speedup": target(figures["speedup"], ">=", 50)}
    say(verdict(targets))
    emit("idempotency", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
