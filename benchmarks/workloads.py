"""Objectives and a runner that time themselves, for the benchmark scripts.

Workers import this module by name (`objective.function: benchmarks.workloads:...`), so
it must stay importable with the repository root on PYTHONPATH and import nothing heavy.

- `objective`: hpoq's cheap objective, timed: what runs inside the objective is the
  work; everything else a trial job does is the queue's overhead.
- `sleep_objective`: sleeps a configured time (standing in for GPU work), then the cheap
  objective. Durations: HPOQ_BENCH_DURATIONS = JSON {backbone name: [seconds per trial
  number]}; a trial number past the end, or another backbone, sleeps 0.
- `run_inference_benchmark`: hpoq's cheap benchmark runner, timed.

Records go to `RECORDS` (this process) and, when HPOQ_BENCH_RECORD_DIR is set, as JSON
lines to `<dir>/<pid>.jsonl`. Celery's task_prerun/task_postrun signals are recorded too
(the task body's start and end inside the worker's pool process).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hpoq.workers.bench.cheap import run_inference_benchmark as cheap_runner
from hpoq.workers.objectives.cheap import objective as cheap_objective

RECORD_DIR_ENV = "HPOQ_BENCH_RECORD_DIR"
DURATIONS_ENV = "HPOQ_BENCH_DURATIONS"
RECORDS: list[dict[str, Any]] = []
_current_task: dict[str, str | None] = {"id": None}


def record(kind: str, **fields: Any) -> None:
    row = {"kind": kind, "pid": os.getpid(), **fields}
    RECORDS.append(row)
    directory = os.environ.get(RECORD_DIR_ENV)
    if directory:
        with (Path(directory) / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


def _job_id(trial: Any) -> str | None:
    return trial.user_attrs.get("hpoq.job_id") or _current_task["id"]


def objective(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    wall = time.time()
    cpu = time.process_time()
    start = time.perf_counter()
    value = cheap_objective(trial, backbone, data, context)
    seconds = time.perf_counter() - start
    record(
        "objective",
        job_id=_job_id(trial),
        trial=trial.number,
        start=wall,
        end=wall + seconds,
        seconds=seconds,
        cpu=time.process_time() - cpu,
    )
    return float(value)


def _duration(backbone: str, number: int) -> float:
    table = json.loads(os.environ.get(DURATIONS_ENV) or "{}")
    durations = table.get(backbone) or []
    return float(durations[number]) if 0 <= number < len(durations) else 0.0


def sleep_objective(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    wall = time.time()
    cpu = time.process_time()
    start = time.perf_counter()
    planned = _duration(backbone.name, trial.number)
    time.sleep(planned)
    value = cheap_objective(trial, backbone, data, context)
    seconds = time.perf_counter() - start
    record(
        "objective",
        job_id=_job_id(trial),
        trial=trial.number,
        backbone=backbone.name,
        planned=planned,
        start=wall,
        end=wall + seconds,
        seconds=seconds,
        cpu=time.process_time() - cpu,
    )
    return float(value)


def run_inference_benchmark(
    checkpoint_dir: Any, data: Any, data_dir: Any, benchmark: Any, device: str | None = None
) -> Any:
    wall = time.time()
    cpu = time.process_time()
    start = time.perf_counter()
    result = cheap_runner(checkpoint_dir, data, data_dir, benchmark, device)
    seconds = time.perf_counter() - start
    record(
        "runner",
        job_id=_current_task["id"],
        checkpoint=str(checkpoint_dir),
        start=wall,
        end=wall + seconds,
        seconds=seconds,
        cpu=time.process_time() - cpu,
    )
    return result


def _connect_task_signals() -> None:
    from celery.signals import task_postrun, task_prerun

    def prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        _current_task["id"] = task_id
        record(
            "task_start",
            job_id=task_id,
            name=getattr(task, "name", None),
            t=time.time(),
            cpu=time.process_time(),
        )

    def postrun(task_id: str | None = None, task: Any = None, state: Any = None, **_: Any) -> None:
        record(
            "task_end",
            job_id=task_id,
            name=getattr(task, "name", None),
            state=state,
            t=time.time(),
            cpu=time.process_time(),
        )
        _current_task["id"] = None

    task_prerun.connect(prerun, weak=False)
    task_postrun.connect(postrun, weak=False)


_connect_task_signals()
