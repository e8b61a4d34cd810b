"""Showing `hpoq run`'s events: bars on a terminal, plain lines in a log.

On a terminal (stdout and stderr both), one bar per variant and one for the benchmarks,
each with its count, elapsed time, estimated time left and, for a variant, its best value
so far. Anywhere else (a file, a pipe, `nohup`, CI) a live display is never drawn: rich
only prints the bars' last state when they stop, so a log stayed empty until the run
ended. There, each event is one line on stderr as it happens (trial finished with its
value, benchmark measured), written and flushed at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpoq.producer.run_events import (
    BenchmarkProgress,
    BenchmarkSettled,
    Eta,
    Observer,
    RunEvent,
    Started,
    TrialFinished,
    VariantProgress,
    clock_text,
)

BENCHMARKS = "benchmarks"


def started_text(event: Started) -> str:
    return (
        f"outputs: {event.outputs}\n"
        f"worker logs: {event.worker_logs}/worker-<n>.log\n"
        f"MLflow: {event.mlflow}\n"
        f"report (written at the end): {event.report}"
    )


def _best(progress: VariantProgress) -> str:
    return "-" if progress.best is None else f"{progress.best:.4f}"


class LineDisplay:
    """One line per event, flushed as it is written."""

    def __init__(self, console: Console, clock: Any = time.monotonic) -> None:
        self.console = console
        self.eta = Eta(clock=clock)
        self._clock = clock
        self._start = clock()

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, Started):
            self._line(started_text(event))
        elif isinstance(event, VariantProgress):
            self.eta.remaining(event.label, event.done, event.total)  # starts its clock
        elif isinstance(event, BenchmarkProgress):
            self.eta.remaining(BENCHMARKS, event.done, event.total)
        elif isinstance(event, TrialFinished):
            p = event.progress
            shown = event.value if event.state == "COMPLETE" else None  # PRUNED: an epoch's
            value = "" if shown is None else f" {p.metric}={shown:.4f}"
            eta = self.eta.remaining(p.label, p.done, p.total)
            self._line(
                f"{p.label}: trial {event.number} {event.state}{value} "
                f"({p.done}/{p.total} finished, {p.running} running, best {_best(p)}, "
                f"eta {clock_text(eta)})"
            )
        elif isinstance(event, BenchmarkSettled):
            b = event.progress
            what = "measured" if event.measured else "failed"
            eta = self.eta.remaining(BENCHMARKS, b.done, b.total)
            detail = f": {event.summary}" if event.summary else ""
            self._line(
                f"benchmark {what}: {event.label}{detail} "
                f"({b.done}/{b.total}, eta {clock_text(eta)})"
            )

    def _line(self, text: str) -> None:
        stamp = clock_text(self._clock() - self._start)
        for line in text.splitlines():
            self.console.print(f"[{stamp}] {escape(line)}", highlight=False, soft_wrap=True)
        self.console.file.flush()


class BarDisplay:
    """Bars on a terminal: count, elapsed, time left, best value so far."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.eta = Eta()
        self._tasks: dict[str, Any] = {}

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, Started):
            self.progress.console.print(escape(started_text(event)), highlight=False)
        elif isinstance(event, VariantProgress):
            self._show(event.label, event.done, event.total, f"best {_best(event)}")
        elif isinstance(event, TrialFinished):
            p = event.progress
            self._show(p.label, p.done, p.total, f"best {_best(p)}")
            if event.state == "FAIL":
                self.progress.console.print(
                    f"[yellow]{escape(p.label)}: trial {event.number} failed[/]", highlight=False
                )
        elif isinstance(event, BenchmarkProgress):
            self._show(BENCHMARKS, event.done, event.total, "")
        elif isinstance(event, BenchmarkSettled):
            self._show(BENCHMARKS, event.progress.done, event.progress.total, "")
            if not event.measured:
                self.progress.console.print(
                    f"[yellow]benchmark failed: {escape(event.label)}[/]", highlight=False
                )

    def _show(self, label: str, done: int, total: int, best: str) -> None:
        eta = f"eta {clock_text(self.eta.remaining(label, done, total))}"
        if label not in self._tasks:
            self._tasks[label] = self.progress.add_task(
                escape(label), total=total, eta=eta, best=best
            )
        self.progress.update(self._tasks[label], completed=done, total=total, eta=eta, best=best)


@contextmanager
def run_display(stdout: Console, stderr: Console) -> Iterator[Observer]:
    """The observer for `hpoq run`: bars when stdout and stderr are terminals, else lines."""
    if not (stdout.is_terminal and stderr.is_terminal):
        yield LineDisplay(stderr)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[best]}"),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        yield BarDisplay(progress)
