"""Question 5: "is this key already measured?" for 1,000 candidate keys against an MLflow
store holding 10,000 benchmark runs: hpoq's batched check against one query per key.

The store (SQLite) is seeded with 10,000 FINISHED benchmark runs with metrics, tagged as hpoq
tags them (`benchmark_key` and the process tags), plus noise that must not count: 500 FAILED
runs, 50 FINISHED runs without any metric (not a measurement), and 500 FINISHED runs under
another benchmark config (another key suffix). Of the 1,000 candidates, 500 are measured and
500 are not (100 of those have only a FAILED run, 50 only a FINISHED run without metrics).

- batched: `hpoq.core.benchmark_dispatch.measured_keys` (what `hpoq benchmark` and
  `hpoq run` call: `hpoq.core.measured_keys.finished_keys`, then the disk cache for the
  rest), and `finished_keys` alone: on a database tracking URI, the candidate keys in
  chunked `tags.value IN (...)` queries on MLflow's own tables (FINISHED, active, with a
  metric);
- the http(s) path: `hpoq.core.measured_keys._search_api` on the same store, what
  `finished_keys` does for a tracking server (one paged MLflow search per key suffix, a
  full Run built for every measured run); the server and the network are not included;
- one query per key: `query_runs_by_tags(client, [exp], {"benchmark_key": key})` and
  `is_measurement`, the query a benchmark job runs for its own key before measuring.
Every path must find the same keys. Seeding uses bulk inserts into MLflow's own tables
(`runs`, `tags`, `metrics`, `latest_metrics`) through its SqlAlchemyStore session and models
(as bench_retrieval.py does); the client API (create_run with tags, log_batch,
set_terminated) is timed on a few runs for comparison.

    python benchmarks/bench_idempotency.py [--quick] [--runs 10000] [--keys 1000]

With --quick the per-key baseline runs on 100 of the 1,000 keys and is scaled up (said so
in the output). Target: batched (`measured_keys`) >= 50x faster than one query per key; the
http(s) path's ratio is reported, not a target.
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


def seed(uri: str, experiment: Any, runs: list[tuple[str, str, bool]]) -> tuple[str, float]:
    """(key, status, with metrics) runs inserted in bulk; returns the experiment id and the
    seconds. A run's metrics go to `metrics` and `latest_metrics` (what MLflow's log_batch
    writes; the measured-key query asks `latest_metrics`)."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    start = time.perf_counter()
    store = SqlAlchemyStore(uri, "file:///tmp/hpoq-bench-artifacts")
    experiment_id = str(store.create_experiment(experiment.benchmark_experiment_name))
    run_rows, tag_rows, metric_rows = [], [], []
    for i, (key, status, with_metrics) in enumerate(runs):
        run_id = uuid.uuid4().hex
        run_rows.append(_run_row(run_id, int(experiment_id), status, i))
        tag_rows += [
            {"key": k, "value": v, "run_uuid": run_id} for k, v in run_tags(experiment, key).items()
        ]
        names = ("fp32_bs1_latency_p50_ms", "fp32_bs1_latency_p95_ms") if with_metrics else ()
        for name in names:
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
        from hpoq.core.benchmark_index import key_suffix
        from hpoq.core.measured_keys import (
            _search_api,
            dispose_engines,
            finished_keys,
            is_measurement,
        )
        from hpoq.core.mlflow_queries import query_runs_by_tags

        experiment = load_experiment(experiment_file(tmp / "exp", name="idem"))
        runtime = runtime_for(tmp / "out")
        suffix = key_suffix(experiment)
        other_suffix = ":0000000000000000:ffffffffffffffff"
        uri = f"sqlite:///{tmp}/mlflow.db"

        measured = [make_key(suffix, rng) for _ in range(args.runs)]
        failed_only = [make_key(suffix, rng) for _ in range(args.keys // 10)]
        no_metrics = [make_key(suffix, rng) for _ in range(args.keys // 20)]
        runs = [(k, "FINISHED", True) for k in measured]
        runs += [(k, "FAILED", True) for k in failed_only]
        runs += [
            (make_key(suffix, rng), "FAILED", True)
            for _ in range(args.runs // 20 - len(failed_only))
        ]
        runs += [(k, "FINISHED", False) for k in no_metrics]
        runs += [(make_key(other_suffix, rng), "FINISHED", True) for _ in range(args.runs // 20)]
        rng.shuffle(runs)
        experiment_id, seed_s = seed(uri, experiment, runs)
        api_s = client_api_seconds_per_run(uri, experiment, 30, suffix)
        say(
            f"seeded {len(runs)} runs ({args.runs} FINISHED with metrics and this suffix) in "
            f"{seed_s:.1f} s by bulk insert; the client API takes {api_s * 1000:.0f} ms per run "
            f"(~{api_s * len(runs) / 60:.1f} min for the same store)"
        )

        half = args.keys // 2
        unmeasured = failed_only + no_metrics
        unmeasured += [make_key(suffix, rng) for _ in range(half - len(unmeasured))]
        candidates = rng.sample(measured, half) + unmeasured
        rng.shuffle(candidates)
        expected = set(candidates) & set(measured)
        client = MlflowClient(tracking_uri=uri)

        def batched() -> set[str]:
            return measured_keys(experiment, runtime, client, candidates)

        def table_query() -> set[str]:
            return set(finished_keys(client, experiment.benchmark_experiment_name, candidates))

        def search_api() -> set[str]:
            return set(_search_api(client, experiment_id, candidates))

        paths = (
            ("measured_keys", batched),
            ("finished_keys", table_query),
            ("search_api", search_api),
        )
        timings: dict[str, float] = {}
        found: dict[str, int] = {}
        try:
            for name, fn in paths:
                keys = fn()  # warm-up and check
                found[name] = len(keys)
                assert keys == expected, (
                    f"{name} found {len(keys)} keys, {len(keys & expected)} of the "
                    f"{len(expected)} expected"
                )
                times = []
                for _ in range(repeats):
                    deadline.check()
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
                timings[name] = statistics.median(times)
        finally:
            dispose_engines()

        sample = candidates if not args.quick else candidates[: max(10, args.keys // 10)]
        start = time.perf_counter()
        found_one_by_one = set()
        for key in sample:
            deadline.check()
            runs_of_key = query_runs_by_tags(client, [experiment_id], {"benchmark_key": key})
            if any(is_measurement(r) for r in runs_of_key):
                found_one_by_one.add(key)
        per_key_s = (time.perf_counter() - start) / len(sample)
        assert found_one_by_one == expected & set(sample), "per-key queries disagree"
        found["per_key_query"] = len(found_one_by_one)

    assert len(expected) == half, (len(expected), half)
    say(
        f"every path finds the same {len(expected)} of {len(candidates)} candidate keys "
        f"(per key: {len(found_one_by_one)} of the {len(sample)} timed)"
    )
    per_key_total = per_key_s * len(candidates)
    figures = {
        "runs_in_store": len(runs),
        "finished_runs_with_suffix": args.runs,
        "finished_runs_without_metrics": len(no_metrics),
        "candidate_keys": len(candidates),
        "measured_candidates": len(expected),
        "found": found,
        "seed_s": round(seed_s, 2),
        "seed_method": "bulk INSERT through MLflow's SqlAlchemyStore session and dbmodels",
        "client_api_ms_per_run": round(api_s * 1000, 1),
        "measured_keys_ms": round(timings["measured_keys"] * 1000, 1),
        "finished_keys_ms": round(timings["finished_keys"] * 1000, 1),
        "search_api_s": round(timings["search_api"], 3),
        "per_key_query_ms": round(per_key_s * 1000, 2),
        "per_key_keys_timed": len(sample),
        "per_key_total_s": round(per_key_total, 2),
        "per_key_extrapolated": len(sample) < len(candidates),
        "speedup": ratio(per_key_total, timings["measured_keys"], 1),
        "finished_keys_speedup": ratio(per_key_total, timings["finished_keys"], 1),
        "search_api_speedup": ratio(per_key_total, timings["search_api"], 1),
    }
    scaled = f" (timed on {len(sample)} keys, scaled)" if figures["per_key_extrapolated"] else ""
    say(
        f"one query per key: {per_key_s * 1000:.1f} ms x {len(candidates)} = "
        f"{per_key_total:.1f} s{scaled}"
    )
    say(
        f"batched, database URI (measured_keys: IN (...) on MLflow's tables, then the disk "
        f"cache): {figures['measured_keys_ms']} ms (finished_keys alone "
        f"{figures['finished_keys_ms']} ms) -> x{figures['speedup']}"
    )
    say(
        f"batched, http(s) tracking server path (measured_keys._search_api: paged LIKE search "
        f"per key suffix, on the same store): {figures['search_api_s']} s "
        f"-> x{figures['search_api_speedup']}"
    )
    targets = {"speedup": target(figures["speedup"], ">=", 50)}
    say(verdict(targets))
    emit("idempotency", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
