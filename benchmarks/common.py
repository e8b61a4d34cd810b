"""Shared helpers of the benchmark scripts: percentiles, a private Redis, temporary output
folders, worker processes that are always stopped, bounded waits, and the JSON line.

Every script:
- runs its own Redis (EmbeddedRedis on 127.0.0.1, data in a temporary folder) and its
  own workers, and stops them in `finally` blocks; it starts through `run(main)`, which
  turns SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt so those blocks also run when it
  is interrupted or killed, and exits 130 then;
- bounds every loop in count and in time (`Deadline`);
- prints human lines first and, last, one JSON document (`emit`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `tests.factories`, and `benchmarks.workloads` for workers
    sys.path.insert(0, str(REPO))

WORKLOADS = "benchmarks.workloads"
TIMED_OBJECTIVE = f"{WORKLOADS}:objective"
SLEEP_OBJECTIVE = f"{WORKLOADS}:sleep_objective"
TIMED_RUNNER = f"{WORKLOADS}:run_inference_benchmark"

T = TypeVar("T")


# ---------------------------------------------------------------- statistics


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> dict[str, Any]:
    """n, p50, p95, p99, mean, min, max of `values` times `scale` (1000: seconds -> ms)."""
    if not values:
        return {"n": 0}
    scaled = [v * scale for v in values]
    return {
        "n": len(scaled),
        "p50": round(quantile(scaled, 0.50), digits),
        "p95": round(quantile(scaled, 0.95), digits),
        "p99": round(quantile(scaled, 0.99), digits),
        "mean": round(sum(scaled) / len(scaled), digits),
        "min": round(min(scaled), digits),
        "max": round(max(scaled), digits),
    }


def fmt(stats: dict[str, Any], unit: str = "ms") -> str:
    if not stats.get("n"):
        return "n=0"
    return (
        f"p50 {stats['p50']:.1f} {unit}, p95 {stats['p95']:.1f} {unit}, "
        f"max {stats['max']:.1f} {unit} (n={stats['n']})"
    )


def ratio(a: float, b: float, digits: int = 2) -> float:
    return round(a / b, digits) if b else math.inf


def target(value: float, op: str, limit: float, unit: str = "") -> dict[str, Any]:
    """A target and whether `value` meets it; op is '<=', '<' or '>='."""
    met = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
    return {"value": value, "target": f"{op} {limit}{unit}", "met": bool(met)}


def verdict(targets: dict[str, dict[str, Any]]) -> str:
    return "  ".join(
        f"{name}: {t['value']} (target {t['target']}) {'MET' if t['met'] else 'MISSED'}"
        for name, t in targets.items()
    )


# ---------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    """Where and when the figures were taken; load shows what else the machine was doing."""
    load1, load5, _ = os.getloadavg()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_1m": round(load1, 2),
        "load_5m": round(load5, 2),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def emit(
    name: str, figures: dict[str, Any], targets: dict[str, dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The last line of every script: one JSON document for machines (also returned)."""
    doc = {
        "benchmark": name,
        "machine": machine(),
        "figures": figures,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
        **extra,
    }
    print(json.dumps(doc, sort_keys=False, default=str), flush=True)
    return doc


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- lifetime and bounds


def handle_signals() -> None:
    """SIGINT (Ctrl-C, even when started with it ignored), SIGTERM and SIGHUP raise
    KeyboardInterrupt, so every `finally` stops what it started."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


class Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self.end = time.monotonic() + seconds
        self.what = what
        self.seconds = seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(f"{self.what}: gave up after {self.seconds:.0f} s")


def wait_for(probe: Callable[[], T | None], deadline: Deadline, interval_s: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy, within the deadline."""
    while True:
        value = probe()
        if value:
            return value
        deadline.check()
        time.sleep(interval_s)


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"hpoq-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def private_redis_server(directory: Path) -> Iterator[Any]:
    """A real redis-server on 127.0.0.1 for this run only (AOF on, as hpoq runs it): the
    EmbeddedRedis, for its `url` and `pid`."""
    from hpoq.core.coordination.embedded import EmbeddedRedis

    server = EmbeddedRedis(directory / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    """The URL of a `private_redis_server`."""
    with private_redis_server(directory) as server:
        yield server.url


@contextmanager
def postgres_database(server_url: str, prefix: str = "hpoq_bench") -> Iterator[str | None]:
    """A fresh database on the PostgreSQL server at `server_url`, dropped afterwards (its
    connections ended); None when the server is unreachable."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(
            f"{server_url.rstrip('/')}/postgres", connect_timeout=3, autocommit=True
        )
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL skipped: {server_url} unreachable ({str(exc).strip()})")
        yield None
        return
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{server_url.rstrip('/')}/{name}"
    finally:
        # WITH (FORCE) ends every session still on it, this process's pooled ones too.
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def clean_env(output: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker: only this run's Redis and output; nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOQ_", "MLFLOW_"))}
    path = [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        HPOQ_REDIS_URL=redis_url,
        HPOQ_OUTPUT_DIR=str(output),
        HPOQ_PLATFORM="local",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(path),
        **extra,
    )
    return env


def set_process_env(env: dict[str, str]) -> None:
    """Make this process see the same hpoq environment as its workers."""
    for name in [n for n in os.environ if n.startswith(("HPOQ_", "MLFLOW_"))]:
        del os.environ[name]
    os.environ.update({k: v for k, v in env.items() if k.startswith(("HPOQ_", "MLFLOW_"))})


class Process:
    """A child process in its own session; `stop` ends its whole group, SIGKILL at last."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the whole group: a Celery worker finishes its job in hand and exits."""
        if self.popen.poll() is None:
            _killpg(self.popen.pid, signal.SIGTERM)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL the group (pool children included)."""
        self.terminate()
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=max(0.1, grace_s))
        _killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _killpg(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def hpoq_worker_argv(
    queues: str = "hpo,benchmark", loglevel: str = "WARNING", index: int = 0
) -> list[str]:
    """`hpoq worker` exactly as `hpoq run` and the integration tests start it; workers on
    one host need distinct indexes."""
    return [
        sys.executable,
        "-m",
        "hpoq.producer",
        "worker",
        "--queues",
        queues,
        "--loglevel",
        loglevel,
        "--index",
        str(index),
    ]


@contextmanager
def processes(
    commands: list[tuple[list[str], dict[str, str]]], log_dir: Path, names: list[str] | None = None
) -> Iterator[list[Process]]:
    """Start (argv, env) pairs; every one is stopped on the way out, whatever happens."""
    started: list[Process] = []
    try:
        for i, (argv, env) in enumerate(commands):
            name = names[i] if names else f"proc-{i}"
            started.append(Process(argv, env, log_dir / f"{name}.log"))
        yield started
    finally:
        for proc in started:  # all at once, then wait: shutdowns overlap
            proc.terminate()
        end = time.monotonic() + 15.0
        for proc in started:
            proc.stop(grace_s=end - time.monotonic())


def wait_ready(app: Any, count: int, procs: list[Process], deadline: Deadline) -> list[str]:
    """Names of `count` workers answering a broadcast ping (their consumers are up)."""

    def probe() -> list[str] | None:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"worker exited at start:\n{proc.tail()}")
        replies = app.control.ping(timeout=0.5) or []
        names = [name for reply in replies for name in reply]
        return names if len(names) >= count else None

    return wait_for(probe, deadline, interval_s=0.2)


def read_records(directory: Path) -> list[dict[str, Any]]:
    """Every JSON line the workload module wrote (one file per process)."""
    rows: list[dict[str, Any]] = []
    if not directory.is_dir():
        return rows
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def experiment_file(root: Path, **kwargs: Any) -> Path:
    """A small experiment written as real YAML files (tests/factories.py)."""
    from tests.factories import write_experiment

    return write_experiment(root, **kwargs)


def runtime_for(output: Path) -> Any:
    from hpoq.config.settings import Settings
    from hpoq.core.runtime import Runtime

    return Runtime.from_settings(Settings(output_dir=output, platform="local"))


@contextmanager
def profiled(enabled: bool, label: str) -> Iterator[None]:
    """With `enabled`, profile the block with pyinstrument and print the call tree to stderr
    (`pip install pyinstrument`); otherwise do nothing."""
    if not enabled:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        print(f"----- profile: {label}", file=sys.stderr)
        print(profiler.output_text(unicode=False, color=False), file=sys.stderr, flush=True)


def run(main: Callable[[], int]) -> None:
    """The scripts' entry point: Ctrl-C or SIGTERM ends with exit code 130, after the
    `finally` blocks have stopped every server and worker the script started."""
    handle_signals()
    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted: stopped everything this script started", file=sys.stderr)
        code = 130
    sys.exit(code)
