"""Best-trial retrieval from MLflow: server-side ordered searches versus reading every run.

For each backend (SQLite; PostgreSQL when reachable) and each size N, N HPO runs are seeded
across 4 backbones x 3 variants (values rounded to 3 decimals, so ties are common), plus
noise (PRUNED/KILLED runs, runs of another experiment tag). Then, side by side on the same
store:

- hpoq: `retrieve_best_trials` (overall scope, and per_variant scope);
- baseline: page through every run of the experiment, filter tags/status/metric in Python
  and apply the same tie-break rule (what a naive implementation does).

Both must agree on every winner; the script fails otherwise. Timings are the median of
`--repeats` runs. Seeding goes straight through MLflow's SqlAlchemyStore: its engine and
its own table definitions (mlflow.store.tracking.dbmodels), one executemany per table and
chunk, because the client API writes ~3 transactions per run (minutes for 10,000 runs).

    python benchmarks/bench_retrieval.py [--sizes 1000,10000] [--quick] [--repeats 3]
        [--postgres-url postgresql://postgres@127.0.0.1:5432]

The last line printed is one JSON document with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from common import postgres_database

REPO = Path(__file__).resolve().parents[1]
BACKBONES = ["alpha", "beta", "gamma", "delta"]
VARIANTS = [1, 2, 3]
METRIC = "macro-f1"
CHUNK = 2000


def make_experiment(root: Path) -> Any:
    from hpoq.config.loader import load_experiment

    shutil.copytree(REPO / "config", root / "config")
    hpo_path = root / "config" / "hpo" / "smoke.yaml"
    hpo = yaml.safe_load(hpo_path.read_text(encoding="utf-8"))
    architecture = hpo["backbones"][0]["architecture"]
    hpo["backbones"] = [{"name": name, "architecture": architecture} for name in BACKBONES]
    hpo_path.write_text(yaml.safe_dump(hpo), encoding="utf-8")
    return load_experiment(root / "config" / "experiment" / "smoke.yaml")


def seed_runs(uri: str, experiment: Any, n_runs: int, seed: int = 0) -> str:
    """N trial runs (plus ~5% noise) inserted in bulk; returns the HPO experiment id."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from hpoq.core.trial_record import TrialRecord

    store = SqlAlchemyStore(uri, "file:///tmp/hpoq-bench-artifacts")
    experiment_id = str(store.create_experiment(experiment.hpo_experiment_name))
    rng = random.Random(seed)
    runs, tags, metrics = [], [], []
    numbers: dict[tuple[str, int], int] = {}
    for i in range(n_runs + n_runs // 20):
        backbone, variant = rng.choice(BACKBONES), rng.choice(VARIANTS)
        number = numbers.get((backbone, variant), 0)
        numbers[(backbone, variant)] = number + 1
        noise = i >= n_runs
        record = TrialRecord(
            experiment="other" if noise and i % 2 else experiment.name,
            backbone=backbone,
            study_name=f"hpo_{backbone}" if variant == 1 else f"hpo_{backbone}_v{variant}",
            variant=variant,
            trial_number=number,
            state="PRUNED" if noise and not i % 2 else "COMPLETE",
            metric=METRIC,
            value=round(rng.random(), 3),
            params={},
        )
        run_id = uuid.uuid4().hex
        status = "FINISHED" if record.state == "COMPLETE" else "KILLED"
        runs.append(_run_row(run_id, int(experiment_id), status, i))
        tags.extend(
            {"key": k, "value": v, "run_uuid": run_id}
            for k, v in record.mlflow_tags(experiment.tags).items()
        )
        row = {"key": METRIC, "value": record.value, "timestamp": i, "step": 0}
        metrics.append({**row, "is_nan": False, "run_uuid": run_id})
    with store.ManagedSessionMaker(read_only=False) as session:
        for table, rows in (
            (SqlRun.__table__, runs),
            (SqlTag.__table__, tags),
            (SqlMetric.__table__, metrics),
            (SqlLatestMetric.__table__, metrics),
        ):
            for start in range(0, len(rows), CHUNK):
                session.execute(table.insert(), rows[start : start + CHUNK])
    if store.engine.dialect.name == "postgresql":
        # Fresh tables have no planner statistics until autovacuum gets to them; a server
        # that has been running has them, so measure that state.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    store.engine.dispose()
    return experiment_id


def _run_row(run_id: str, experiment_id: int, status: str, i: int) -> dict[str, Any]:
    return {
        "run_uuid": run_id,
        "name": f"trial-{i}",
        "source_type": "LOCAL",
        "source_name": "",
        "entry_point_name": "",
        "user_id": "bench",
        "status": status,
        "start_time": 1_700_000_000_000 + i,
        "end_time": 1_700_000_000_000 + i,
        "source_version": "",
        "lifecycle_stage": "active",
        "artifact_uri": "",
        "experiment_id": experiment_id,
    }


def baseline(client: Any, experiment: Any, experiment_id: str, per_variant: bool) -> set[Any]:
    """Every run of the experiment fetched (paged), then filtered and ranked in Python."""
    from hpoq.core.mlflow_queries import metric_value, parse_int_tag
    from hpoq.core.retrieval import BestTrial, pick_best

    process, grouping = experiment.tags.process, experiment.tags.grouping
    direction = experiment.selection.objective.direction
    groups: dict[tuple[str, int], list[BestTrial]] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], "", max_results=1000, page_token=token)
        for run in page:
            t = run.data.tags
            variant = parse_int_tag(run, process.variant)
            number = parse_int_tag(run, process.trial_number)
            value = metric_value(run, METRIC)
            if (
                run.info.status != "FINISHED"
                or t.get(process.stage) != "hpo"
                or t.get(process.experiment) != experiment.name
                or variant is None
                or number is None
                or value is None
                or not t.get(grouping.study_key_hash)
            ):
                continue
            trial = BestTrial(
                backbone=t[process.backbone],
                study_name=t[process.study_name],
                variant=variant,
                trial_number=number,
                trial_id=t[grouping.trial_key_hash],
                run_id=run.info.run_id,
                metric=METRIC,
                value=value,
                source="mlflow",
            )
            key = (trial.backbone, variant if per_variant else 0)
            groups.setdefault(key, []).append(trial)
        token = page.token
        if not token:
            break
    winners = (pick_best(trials, direction) for trials in groups.values())
    return {(w.backbone, w.variant, w.trial_number) for w in winners if w is not None}


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    fn()  # warm-up, untimed: lazy imports and first-query caches are not what is measured
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_one(backend: str, uri: str, n_runs: int, repeats: int) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from hpoq.core.retrieval import retrieve_best_trials
    from hpoq.core.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="hpoq-bench-") as tmp:
        root = Path(tmp)
        os.environ["HPOQ_OUTPUT_DIR"] = str(root / "out")  # empty: Optuna and disk have nothing
        experiment = make_experiment(root)
        start = time.perf_counter()
        experiment_id = seed_runs(uri, experiment, n_runs)
        seed_s = time.perf_counter() - start
        client = MlflowClient(tracking_uri=uri)
        runtime = Runtime.from_settings()
        row: dict[str, Any] = {"backend": backend, "runs": n_runs, "seed_s": round(seed_s, 2)}
        for scope in ("overall", "per_variant"):

            def ours(scope: str = scope) -> set[Any]:
                result = retrieve_best_trials(experiment, runtime, scope=scope, client=client)
                assert not result.warnings, result.warnings
                assert all(t.source == "mlflow" for t in result.best)
                return {(t.backbone, t.variant, t.trial_number) for t in result.best}

            ours_s, ours_found = median_time(ours, repeats)
            naive_s, naive_found = median_time(
                lambda scope=scope: baseline(
                    client, experiment, experiment_id, scope == "per_variant"
                ),
                repeats,
            )
            if ours_found != naive_found:
                raise SystemExit(f"{backend} N={n_runs} {scope}: winners differ")
            row[f"{scope}_hpoq_s"] = round(ours_s, 4)
            row[f"{scope}_baseline_s"] = round(naive_s, 4)
            row[f"{scope}_speedup"] = round(naive_s / ours_s, 1)
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated run counts")
    parser.add_argument("--quick", action="store_true", help="N=1000 only, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    repeats = 1 if args.quick else args.repeats
    os.environ.pop("HPOQ_OPTUNA_STORAGE", None)

    rows = []
    with tempfile.TemporaryDirectory(prefix="hpoq-bench-sqlite-") as tmp:
        for n in sizes:
            rows.append(bench_one("sqlite", f"sqlite:///{tmp}/mlflow-{n}.db", n, repeats))
            _print(rows[-1])
    for n in sizes:
        with postgres_database(args.postgres_url) as url:
            if url is None:
                break
            rows.append(bench_one("postgresql", url, n, repeats))
            _print(rows[-1])
    print(json.dumps({"benchmark": "retrieval", "repeats": repeats, "results": rows}))


def _print(row: dict[str, Any]) -> None:
    print(
        f"{row['backend']:<10} N={row['runs']:>6} (seeded in {row['seed_s']:.1f}s)  "
        f"overall: hpoq {row['overall_hpoq_s'] * 1000:8.1f} ms, all runs "
        f"{row['overall_baseline_s'] * 1000:9.1f} ms, x{row['overall_speedup']:<6}  "
        f"per_variant: hpoq {row['per_variant_hpoq_s'] * 1000:8.1f} ms, all runs "
        f"{row['per_variant_baseline_s'] * 1000:9.1f} ms, x{row['per_variant_speedup']}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
