"""Following enqueued jobs to the end (`--wait`): a bar on a terminal, else one line per
job as it ends (a log file shows them as they happen; see producer/progress_display.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpoq.errors import HpoqError
from hpoq.producer.output import stderr, stdout
from hpoq.producer.run_events import clock_text

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
    lines = not (stdout.is_terminal and stderr.is_terminal)
    started = time.monotonic()
    with Progress(*columns, console=stderr, transient=False, disable=lines) as progress:
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
                    if lines:
                        state = "done" if result.successful() else "failed"
                        stderr.print(
                            f"[{clock_text(time.monotonic() - started)}] {label}: job {job_id} "
                            f"{state} ({len(results)}/{len(job_ids)})",
                            highlight=False,
                            markup=False,
                        )
            if pending:
                if deadline is not None and time.monotonic() > deadline:
                    raise HpoqError(f"{len(pending)} of {len(job_ids)} jobs still unfinished")
                time.sleep(poll_s)
    return results
