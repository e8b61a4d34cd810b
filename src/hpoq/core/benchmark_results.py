"""A benchmark's measured result, read back for people: `hpoq run`'s table and `hpoq report`.

The result of a key is read from this host's disk cache, else from the FINISHED MLflow run
tagged with the key (its `benchmark.json` artifact), so a producer that did not run the
benchmark (a cluster) reads it too. `benchmark_row` flattens it into one row per
(precision, padding, batch size) entry with the latency percentiles, throughput, the
number of timed batches and the peak memory where it was measured (the CUDA allocator's
peak; a CPU run has none: `peak_memory_mb` is None, shown as "n/a").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hpoq.config.experiment import Experiment
from hpoq.config.tags import BENCHMARK_KEY_TAG
from hpoq.core.benchmark_index import read_cache
from hpoq.core.measured_keys import is_measurement
from hpoq.core.mlflow_queries import FINISHED, query_runs_by_tags
from hpoq.core.runtime import Runtime

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
RESULT_ARTIFACT = "benchmark.json"  # what a benchmark run logs (workers/benchmark_job.py)
MEASURED_MEMORY_KINDS = frozenset({"cuda_max_allocated"})


def load_result(
    experiment: Experiment, runtime: Runtime, client: MlflowClient | None, key: str
) -> dict[str, Any] | None:
    """`{"run_id", "result"}` of the key's measurement, or None when there is none here."""
    cached = read_cache(runtime.layout, key)
    if cached is not None:
        return {"run_id": cached.get("run_id"), "result": cached.get("result") or {}}
    if client is None:
        return None
    try:
        return _from_mlflow(experiment, client, key)
    except Exception as exc:  # MLflow down: the result is "not here", never a crash
        log.warning("could not read the benchmark of %s from MLflow: %s", key, exc)
        return None


def _from_mlflow(experiment: Experiment, client: MlflowClient, key: str) -> dict[str, Any] | None:
    import mlflow.artifacts

    from hpoq.core.tracking import find_experiment_id

    experiment_id = find_experiment_id(client, experiment.benchmark_experiment_name)
    if experiment_id is None:
        return None
    runs = query_runs_by_tags(
        client,
        [experiment_id],
        {BENCHMARK_KEY_TAG: key},
        status=FINISHED,
        order_by=["attributes.start_time DESC"],
        page_size=10,
    )
    for run in runs:
        if not is_measurement(run):
            continue
        uri = f"{run.info.artifact_uri.rstrip('/')}/{RESULT_ARTIFACT}"
        result = mlflow.artifacts.load_dict(uri)
        return {"run_id": run.info.run_id, "result": result}
    return None


def benchmark_row(candidate: dict[str, Any], found: dict[str, Any] | None) -> dict[str, Any]:
    """The candidate (`Candidate.to_json()`) with its status and measured entries."""
    row = dict(candidate)
    if found is None:
        row["status"] = "missing"
        return row
    result = found.get("result") or {}
    memory_measured = result.get("memory_kind") in MEASURED_MEMORY_KINDS
    row["status"] = "measured"
    row["run_id"] = found.get("run_id")
    row["device"] = result.get("device")
    row["device_name"] = result.get("device_name")
    row["memory_kind"] = result.get("memory_kind")
    row["entries"] = [
        {
            "precision": e["precision"],
            "padding": e.get("padding"),
            "batch_size": e["batch_size"],
            "status": e["status"],
            "iterations": e.get("iterations"),
            "latency_p50_ms": (e.get("latency_ms") or {}).get("p50"),
            "latency_p95_ms": (e.get("latency_ms") or {}).get("p95"),
            "latency_p99_ms": (e.get("latency_ms") or {}).get("p99"),
            "throughput_sentences_per_s": e.get("throughput_sentences_per_s"),
            "peak_memory_mb": e.get("peak_memory_mb") if memory_measured else None,
            "error": e.get("error"),
        }
        for e in result.get("entries", [])
    ]
    return row
