"""Stop signals to `hpoq run`, started as `nohup` or `&` in a script start it (SIGINT and
SIGHUP ignored): SIGTERM, SIGHUP, SIGINT and a double SIGINT each stop its workers and its
embedded Redis, and leave no process behind (checked in the process table)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest

from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.runtime import Runtime
from hpoq.core.variants import VariantRef
from hpoq.producer.local_cluster import STOP_GRACE_S
from tests.factories import write_experiment
from tests.integration.cluster import cluster_env, wait_for

pytestmark = pytest.mark.slow


def _like_nohup() -> None:
    """What `nohup` and a script's `&` leave a process with: SIGINT and SIGHUP ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _tree(pid: int) -> dict[int, float]:
    """The process's descendants: pid -> start time (so a reused pid is not mistaken)."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            continue
    return found


def _still_running(processes: dict[int, float]) -> list[str]:
    left = []
    for pid, started in processes.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid}: {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return left


@pytest.mark.parametrize(
    ("signals", "step_sleep"),
    [
        pytest.param([signal.SIGTERM], "1", id="sigterm"),
        pytest.param([signal.SIGHUP], "1", id="sighup"),
        pytest.param([signal.SIGINT], "1", id="sigint"),
        # The trial in hand would take a minute: the second signal must cut the wait short.
        pytest.param([signal.SIGINT, signal.SIGINT], "20", id="double-sigint"),
    ],
)
def test_a_stop_signal_leaves_no_process_behind(
    tmp_path: Path, signals: list[signal.Signals], step_sleep: str
) -> None:
    path = write_experiment(tmp_path, n_trials=3)
    output = tmp_path / "out"
    env = cluster_env(output, "", HPOQ_CHEAP_OBJECTIVE_SLEEP=step_sleep)
    env.pop("HPOQ_REDIS_URL")  # the embedded Redis, which the run must stop
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpoq.producer", "run", str(path), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_like_nohup,
    )
    experiment = load_experiment(path)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    ref = VariantRef("tiny", 1, "hpo_tiny")
    processes: dict[int, float] = {}

    def a_trial_runs() -> bool:
        processes.update(_tree(proc.pid))  # the Redis, the workers and their pool children
        study = runtime.study_store(experiment.hpo.checkpoint).load(ref)
        running = (optuna.trial.TrialState.RUNNING,)
        return study is not None and bool(study.get_trials(states=running))

    try:
        wait_for(a_trial_runs, 180, "a running trial")
        processes.update(_tree(proc.pid))
        assert any("redis-server" in " ".join(psutil.Process(p).cmdline()) for p in processes)
        started = time.monotonic()
        for signum in signals:
            proc.send_signal(signum)
            time.sleep(0.5)
        out, err = proc.communicate(timeout=180)
        stopped_after = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = err.decode()
    assert proc.returncode == 128 + signals[0], stderr[-3000:]
    assert f"up to {STOP_GRACE_S:.0f} s" in stderr  # said at once what it waits for
    assert f"stopped by {signals[0].name}" in stderr
    error = json.loads(out)["error"]
    assert (error["kind"], error["exit_code"]) == ("interrupted", 128 + signals[0])
    # Nothing left: not the Redis, not a worker, not a pool child (the kernel may take a
    # moment to reap what exited last).
    deadline = time.monotonic() + 10
    while _still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _still_running(processes) == []
    assert not (output / "redis" / "redis.pid").exists()  # Redis shut down cleanly
    if len(signals) > 1:
        assert stopped_after < STOP_GRACE_S  # the second signal cut the wait short


def test_a_killed_run_takes_its_workers_and_redis_with_it(tmp_path: Path) -> None:
    """SIGKILL cannot be handled: the kernel tells the children (Linux), so a run that
    crashed or was killed leaves nothing running, and the next run starts afresh."""
    path = write_experiment(tmp_path, n_trials=3)
    output = tmp_path / "out"
    env = cluster_env(output, "", HPOQ_CHEAP_OBJECTIVE_SLEEP="1")
    env.pop("HPOQ_REDIS_URL")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpoq.producer", "run", str(path), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes: dict[int, float] = {}

    def workers_up() -> bool:
        processes.update(_tree(proc.pid))
        names = [" ".join(psutil.Process(p).cmdline()) for p in processes if psutil.pid_exists(p)]
        return any("celery" in n for n in names) and any("redis-server" in n for n in names)

    try:
        wait_for(workers_up, 180, "the workers and the embedded Redis")
        processes.update(_tree(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    # The workers get SIGTERM: a warm shutdown lets the trial in hand finish first.
    deadline = time.monotonic() + 60
    while _still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _still_running(processes) == []
