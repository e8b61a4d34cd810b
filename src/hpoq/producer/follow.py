"""Following enqueued jobs to the end with a progress bar (`--wait`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpoq.errors import HpoqError
from hpoq.producer.output import stderr

if TYPE_CHECKING:
    from celery import Celery


def wait_for_jobs(
    celery: Celery,
    job_ids: list[str],
    *,
    label: str,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Block until every job has a result; returns job id -> what the job returned, or
    `{"status": "failed", "error": text}` for a job that failed (a FAILURE task)."""
    from celery.result import AsyncResult

    results: dict[str, Any] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        bar = progress.add_task(label, total=len(job_ids))
        pending = list(job_ids)
        while pending:
            for job_id in list(pending):
                result = AsyncResult(job_id, app=celery)
                if result.ready():
                    outcome = result.result
                    results[job_id] = (
                        outcome
                        if result.successful()
                        else {"status": "failed", "error": str(outcome) or repr(outcome)}
                    )
                    pending.remove(job_id)
                    progress.advance(bar)
            if pending:
                if deadline is not None and time.monotonic() > deadline:
                    raise HpoqError(f"{len(pending)} of {len(job_ids)} jobs still unfinished")
                time.sleep(poll_s)
    return results
