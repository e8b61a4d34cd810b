"""Real worker processes for integration tests, started exactly as `hpoq worker` starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def cluster_env(output: Path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOQ_", "MLFLOW_"))}
    env.update(
        HPOQ_REDIS_URL=redis_url,
        HPOQ_OUTPUT_DIR=str(output),
        HPOQ_PLATFORM="local",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class Worker:
    """One `hpoq worker` process group; its log goes to a file for post-mortems."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        queues: str = "hpo,benchmark",
        *extra: str,
        cwd: Path | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hpoq.producer",
                "worker",
                "--queues",
                queues,
                "--loglevel",
                "INFO",
                *extra,
            ],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and its pool children."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def workers(
    env: dict[str, str], tmp: Path, count: int, queues: str = "hpo,benchmark", *extra: str
) -> Iterator[list[Worker]]:
    """`count` workers on this host, numbered as `hpoq run` numbers them (`--slot`)."""
    started = [
        Worker(env, tmp / f"worker{i}.log", queues, "--index", str(i), *extra) for i in range(count)
    ]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def wait_for(
    probe: Callable[[], T | None], timeout_s: float, what: str, logs: list[Worker] = ()
) -> T:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    tails = "\n".join(w.log()[-4000:] for w in logs)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tails}")
