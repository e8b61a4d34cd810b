"""Worker processes on this machine, started and stopped by `hpoq run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


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
                argv += ["--slot", str(index)]
            log = (self.log_dir / f"worker-{index}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            log.close()

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to each worker's main process (Celery's warm shutdown: the pool child
        finishes the job in hand), then SIGKILL to the whole group after `grace_s`."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes = []
