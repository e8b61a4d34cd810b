"""Objectives and runners that misbehave on purpose, for the fault tests: some take their
whole worker process down, some hang the first time (to be killed), one fails.

Workers import them by dotted path (`tests.integration.crashing:sigkill`), like any
objective; the test starts workers from the repository root so `tests` is importable.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def sigkill(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    """The process kills itself, as the kernel's OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def hard_exit(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    """The process exits without unwinding (a native library calling exit)."""
    os._exit(3)


# --- slow the first time, cheap afterwards: the victims of the kill tests ----------------

MARKERS_ENV = "HPOQ_TEST_MARKER_DIR"
FIRST_SLEEP_S = 600.0


def _first(name: str) -> bool:
    """True for the first caller across every worker sharing the marker directory."""
    try:
        os.close(os.open(Path(os.environ[MARKERS_ENV]) / name, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def slow_first(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    """The cluster's first trial hangs (its worker is killed meanwhile); the others are the
    cheap objective."""
    from hpoq.workers.objectives.cheap import objective

    if _first("objective"):
        time.sleep(FIRST_SLEEP_S)
    return objective(trial, backbone, data, context)


def slow_first_benchmark(*args: Any, **kwargs: Any) -> Any:
    """The cluster's first benchmark hangs; the others are the cheap runner."""
    from hpoq.workers.bench.cheap import run_inference_benchmark

    if _first("benchmark"):
        time.sleep(FIRST_SLEEP_S)
    return run_inference_benchmark(*args, **kwargs)


def fails_after_the_first(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    """Trial 0 completes; every later trial raises, as a diverging model does."""
    from hpoq.workers.objectives.cheap import objective

    if trial.number > 0:
        raise FloatingPointError(f"loss diverged in trial {trial.number}")
    return objective(trial, backbone, data, context)


RELEASE = "release"


def held_benchmark(*args: Any, **kwargs: Any) -> Any:
    """The cheap runner, once the test has created the marker `release` (two minutes at
    most): the benchmark is in flight for exactly as long as the test needs."""
    from hpoq.workers.bench.cheap import run_inference_benchmark

    release = Path(os.environ[MARKERS_ENV]) / RELEASE
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return run_inference_benchmark(*args, **kwargs)
