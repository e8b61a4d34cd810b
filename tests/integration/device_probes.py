"""An objective and a benchmark runner that record when they ran, for the device-sharing
tests. Workers import them by dotted path (`tests.integration.device_probes:objective`);
the test starts workers from the repository root so `tests` is importable.

Each pool process appends JSON lines to `<$HPOQ_TEST_PROBE_DIR>/<pid>.jsonl`:
- `objective`: one per attempt of a trial (study, trial number, start, end, outcome);
- `benchmark`: the measurement of a benchmark (checkpoint, start, end);
- `task_start`: when a Celery job started in the process (task name, backbone), from the
  task_prerun signal, connected when the module is first imported (a process's first
  trial), so every later job of the process is recorded.

The objective is the cheap objective plus a pause: HPOQ_TEST_TRIAL_SECONDS for every
backbone but `quick`, whose trial ends once another backbone's trial has been running
for a second (so whatever `quick` triggers meets a busy device). The trial numbers in
HPOQ_TEST_OOM_TRIALS (`study:number`, comma-separated) raise torch's OutOfMemoryError
halfway through their first attempt in a process, as a trial over its memory share does.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from hpoq.workers.bench import cheap as cheap_bench
from hpoq.workers.objectives import cheap

RECORD_ENV = "HPOQ_TEST_PROBE_DIR"
SECONDS_ENV = "HPOQ_TEST_TRIAL_SECONDS"
OOM_ENV = "HPOQ_TEST_OOM_TRIALS"
QUICK = "quick"

_attempts: dict[str, int] = {}


def record(kind: str, **fields: Any) -> None:
    directory = os.environ.get(RECORD_ENV)
    if not directory:
        return
    row = {"kind": kind, "pid": os.getpid(), **fields}
    with (Path(directory) / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def read_records(directory: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):  # a line another process is writing
                rows.append(json.loads(line))
    return rows


def objective(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    name = f"{context.study_name}:{trial.number}"
    attempt = _attempts[name] = _attempts.get(name, 0) + 1
    pause = float(os.environ.get(SECONDS_ENV, "1"))
    start = time.time()
    record("objective_started", study=context.study_name, trial=trial.number, start=start)
    outcome = "ok"
    try:
        if backbone.name == QUICK:
            _wait_for_another_trial(context.study_name, running_for_s=1.0)
            pause = 0.0
        if attempt == 1 and name in os.environ.get(OOM_ENV, "").split(","):
            import torch  # noqa: TID251 - runs in the worker, as the trainer does

            time.sleep(pause / 2)
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (probe: over its share)"
            )
        time.sleep(pause)
        return cheap.objective(trial, backbone, data, context)
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        record(
            "objective",
            study=context.study_name,
            trial=trial.number,
            attempt=attempt,
            start=start,
            end=time.time(),
            outcome=outcome,
        )


def _wait_for_another_trial(study: str, running_for_s: float, timeout_s: float = 120) -> None:
    directory = Path(os.environ[RECORD_ENV])
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        starts = [
            r["start"]
            for r in read_records(directory)
            if r["kind"] == "objective_started" and r["study"] != study
        ]
        if starts and time.time() >= min(starts) + running_for_s:
            return
        time.sleep(0.05)
    raise TimeoutError("no other trial started")


def run_inference_benchmark(checkpoint: Path, *args: Any, **kwargs: Any) -> Any:
    start = time.time()
    try:
        return cheap_bench.run_inference_benchmark(checkpoint, *args, **kwargs)
    finally:
        record("benchmark", checkpoint=str(checkpoint), start=start, end=time.time())


def _connect_task_start() -> None:
    from celery.signals import task_prerun

    def started(task: Any = None, args: Any = None, **_: Any) -> None:
        payload = args[0] if args else None
        backbone = payload.get("backbone") if isinstance(payload, dict) else None
        record("task_start", task=getattr(task, "name", None), backbone=backbone, t=time.time())

    task_prerun.connect(started, weak=False)


if os.environ.get(RECORD_ENV):
    _connect_task_start()
