"""`hpoq worker`: a Celery worker bound to one GPU (or the CPU)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from hpoq.producer.output import exit_codes


def node_name(gpu: int | None, slot: int | None = None) -> str:
    """The Celery node name: `hpoq-gpu<N>@<host>` (`hpoq-cpu@<host>` without a GPU), plus
    `-<slot>` where several workers share a host and a device. Stable across restarts, so a
    restarted worker takes its own row in Flower and `hpoq status` back."""
    device = f"gpu{gpu}" if gpu is not None else "cpu"
    suffix = f"-{slot}" if slot is not None else ""
    return f"hpoq-{device}{suffix}@%h"


def worker_argv(
    gpu: int | None,
    queues: str,
    concurrency: int,
    loglevel: str,
    task_events: bool = False,
    slot: int | None = None,
) -> list[str]:
    """The celery command line, the worker named by `node_name`. Task events are off unless
    asked for: Flower switches them on by itself while it runs, a cluster that runs Flower
    starts its workers with them (so a new worker's first job shows too)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "hpoq.workers.worker_app",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",  # the child never inherits a CUDA context: the parent has none
        "--prefetch-multiplier",
        "1",
        "--hostname",
        node_name(gpu, slot),
        "--loglevel",
        loglevel,
        "--without-mingle",
    ]
    return [*argv, "--task-events"] if task_events else argv


def worker(
    gpu: Annotated[int | None, typer.Option("--gpu", min=0, help="GPU index to bind.")] = None,
    queues: Annotated[
        str, typer.Option("--queues", help="Comma-separated queues.")
    ] = "hpo,benchmark",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64)] = 1,
    slot: Annotated[
        int | None,
        typer.Option(
            "--slot",
            min=0,
            help="Tells apart workers on one host and device: hpoq-gpu0-<slot>@host.",
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel")] = "INFO",
    task_events: Annotated[
        bool,
        typer.Option(
            "--task-events/--no-task-events",
            help="Send task events from the start (Flower turns them on by itself).",
        ),
    ] = False,
) -> None:
    """Start a worker on one GPU. CUDA_VISIBLE_DEVICES is set before anything loads torch."""
    from hpoq.core.coordination.local_redis import resolve_redis_url
    from hpoq.core.jobs import QUEUE_BENCHMARK, QUEUE_HPO
    from hpoq.core.runtime import Runtime
    from hpoq.errors import InputError

    with exit_codes():
        wanted = [q.strip() for q in queues.split(",") if q.strip()]
        unknown = sorted(set(wanted) - {QUEUE_HPO, QUEUE_BENCHMARK})
        if not wanted or unknown:
            raise InputError(f"--queues: unknown queue(s) {unknown or queues!r}; use hpo,benchmark")
        url, _ = resolve_redis_url(Runtime.from_settings(), start=False)
    env = dict(os.environ, HPOQ_REDIS_URL=url)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    argv = worker_argv(gpu, ",".join(wanted), concurrency, loglevel, task_events, slot)
    os.execve(argv[0], argv, env)
