"""Worker processes on this machine, started and stopped by `hpoq run`.

Each worker runs in its own process group (its Celery pool children with it), so a
terminal's Ctrl-C reaches only `hpoq run`, which decides how the workers stop; and each
gets SIGTERM from the kernel if `hpoq run` dies without cleaning up (Linux).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from threading import Event

from hpoq.core.processes import die_with_parent

# Warm shutdown (SIGTERM): the job in hand finishes, for up to this long.
STOP_GRACE_S = 30.0
# Cold shutdown (SIGQUIT): Celery ends the job in hand and hands its message back to the
# queue, so the next run picks it up at once; SIGKILL after this long.
COLD_STOP_S = 5.0


def visible_gpu_count() -> int:
    """GPUs this process may use, without importing torch (the producer never does)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def default_worker_count() -> int:
    """One worker per visible GPU; one on a CPU-only machine."""
    return max(1, visible_gpu_count())


class LocalWorkers:
    """N `hpoq worker` processes, each pinned to its GPU when there are GPUs."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path) -> None:
        self.count = count
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if self.processes:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        gpus = visible_gpu_count()
        shared = self.count > max(gpus, 1)  # some workers share a device: number them
        for index in range(self.count):
            argv = [sys.executable, "-m", "hpoq.producer", "worker", "--loglevel", "INFO"]
            if gpus:
                argv += ["--gpu", str(index % gpus)]
            if shared:
                argv += ["--index", str(index)]
            log = (self.log_dir / f"worker-{index}.log").open("ab")
            try:
                self.processes.append(
                    subprocess.Popen(
                        argv,
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=die_with_parent(),
                    )
                )
            finally:
                log.close()

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def stop(self, grace_s: float = STOP_GRACE_S, hurry: Event | None = None) -> None:
        """Warm shutdown (SIGTERM to each worker's main process: the job in hand finishes)
        for up to `grace_s`, or until `hurry` is set; then cold shutdown (SIGQUIT), then
        SIGKILL to whatever is left of each worker's process group. Returns when every
        worker process is gone."""
        running = [p for p in self.processes if p.poll() is None]
        for proc in running:
            _signal(proc, signal.SIGTERM, group=False)
        self._wait(running, grace_s, hurry)
        for proc in running:
            if proc.poll() is None:
                _signal(proc, signal.SIGQUIT, group=False)
        self._wait(running, COLD_STOP_S, None)
        for proc in self.processes:
            # Also reaches pool children whose main process has already gone.
            _signal(proc, signal.SIGKILL, group=True)
            proc.wait()
        self.processes = []

    @staticmethod
    def _wait(procs: list[subprocess.Popen[bytes]], seconds: float, hurry: Event | None) -> None:
        deadline = time.monotonic() + seconds
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                return
            time.sleep(0.1)


def _signal(proc: subprocess.Popen[bytes], signum: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signum)
        elif proc.poll() is None:
            proc.send_signal(signum)
    except (ProcessLookupError, PermissionError):
        pass
