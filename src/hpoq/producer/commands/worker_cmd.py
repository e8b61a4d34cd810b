"""`hpoq worker`: a Celery worker bound to one GPU (or the CPU)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from hpoq.producer.output import exit_codes


def node_name(gpu: int | None, index: int | None = None) -> str:
    """The Celery node name: `hpoq-gpu<N>@<host>` (`hpoq-cpu@<host>` without a GPU), plus
    `-<index>` where several workers share a host and a device. Stable across restarts, so a
    restarted worker takes its own row in Flower and `hpoq status` back."""
    device = f"gpu{gpu}" if gpu is not None else "cpu"
    suffix = f"-{index}" if index is not None else ""
    return f"hpoq-{device}{suffix}@%h"


def worker_argv(
    gpu: int | None,
    queues: str,
    concurrency: int,
    loglevel: str,
    task_events: bool = False,
    index: int | None = None,
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
        node_name(gpu, index),
        "--loglevel",
        loglevel,
        "--without-mingle",
    ]
    return [*argv, "--task-events"] if task_events else argv


def worker(
    gpu: Annotated[int | None, typer.Option("--gpu", min=0, help="GPU index to bind.")] = None,
    queues: Annotated[
        str, typer.Option("--queues", help="Comma-separated queues.")
    ] = "hpo,benchmark,train",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64)] = 1,
    index: Annotated[
        int | None,
        typer.Option(
            "--index",
            min=0,
            help="Tells apart workers on one host and device: hpoq-gpu0-<index>@host.",
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
    slots: Annotated[
        int,
        typer.Option(
            "--slots",
            min=1,
            max=64,
            help="Trial processes sharing the device, each capped to its share of GPU memory.",
        ),
    ] = 1,
) -> None:
    """Start a worker on one GPU. CUDA_VISIBLE_DEVICES is set before anything loads torch.

    With --slots K the worker runs K jobs at once on its device (K pool processes); a
    benchmark still has the device to itself."""
    from hpoq.core.coordination.local_redis import resolve_redis_url
    from hpoq.core.jobs import JOB_QUEUES
    from hpoq.core.runtime import Runtime
    from hpoq.errors import InputError

    with exit_codes():
        wanted = [q.strip() for q in queues.split(",") if q.strip()]
        unknown = sorted(set(wanted) - set(JOB_QUEUES))
        if not wanted or unknown:
            raise InputError(
                f"--queues: unknown queue(s) {unknown or queues!r}; use {','.join(JOB_QUEUES)}"
            )
        if slots > 1 and concurrency not in (1, slots):
            raise InputError("--slots sets the worker's concurrency; leave --concurrency out")
        url, _ = resolve_redis_url(Runtime.from_settings(), start=False)
    env = dict(os.environ, HPOQ_REDIS_URL=url, HPOQ_WORKER_SLOTS=str(slots))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    argv = worker_argv(gpu, ",".join(wanted), max(concurrency, slots), loglevel, task_events, index)
    os.execve(argv[0], argv, env)
