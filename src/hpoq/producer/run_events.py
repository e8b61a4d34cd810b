"""What `hpoq run` tells the person watching it, as it happens.

`run_experiment` (producer/local_run.py) emits these events; producer/progress_display.py
shows them as bars on a terminal and as one plain line each otherwise. `TrialWatch` turns
successive reads of a variant's Optuna study into the events of the trials that finished
since the last read, with the variant's best value so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpoq.config.base import Direction

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class Started:
    """Where to look while the run goes on."""

    outputs: str
    worker_logs: str
    mlflow: str
    report: str


@dataclass(frozen=True)
class VariantProgress:
    """A variant's count of finished trials (COMPLETE + PRUNED) and its best value so far."""

    label: str
    done: int
    total: int
    metric: str
    best: float | None
    running: int


@dataclass(frozen=True)
class TrialFinished:
    """A trial of a variant ended (COMPLETE, PRUNED or FAIL) since the last look."""

    label: str
    number: int
    state: str
    value: float | None
    progress: VariantProgress


@dataclass(frozen=True)
class BenchmarkProgress:
    done: int
    total: int


@dataclass(frozen=True)
class BenchmarkSettled:
    """A benchmark key is measured, or failed for good."""

    label: str
    measured: bool
    summary: str
    progress: BenchmarkProgress


RunEvent = Started | VariantProgress | TrialFinished | BenchmarkProgress | BenchmarkSettled
Observer = Callable[[RunEvent], None]

FINISHED_STATES = ("COMPLETE", "PRUNED")
ENDED_STATES = (*FINISHED_STATES, "FAIL")


@dataclass
class TrialWatch:
    """The trials of one variant seen so far; `update` returns the ones that ended since.

    The first `update` only records what had already ended (a resumed variant's earlier
    trials are not news)."""

    label: str
    total: int
    metric: str
    direction: Direction
    _ended: set[int] | None = None

    def update(self, trials: list[FrozenTrial]) -> tuple[VariantProgress, list[TrialFinished]]:
        ended = {t.number: t for t in trials if t.state.name in ENDED_STATES}
        progress = VariantProgress(
            label=self.label,
            done=sum(t.state.name in FINISHED_STATES for t in trials),
            total=self.total,
            metric=self.metric,
            best=self._best(trials),
            running=sum(t.state.name == "RUNNING" for t in trials),
        )
        if self._ended is None:
            self._ended = set(ended)
            return progress, []
        news = [
            TrialFinished(
                label=self.label,
                number=number,
                state=ended[number].state.name,
                value=_value(ended[number]),
                progress=progress,
            )
            for number in sorted(set(ended) - self._ended)
        ]
        self._ended |= set(ended)
        return progress, news

    def _best(self, trials: list[FrozenTrial]) -> float | None:
        values = [v for t in trials if t.state.name == "COMPLETE" if (v := _value(t)) is not None]
        if not values:
            return None
        return max(values) if self.direction is Direction.MAXIMIZE else min(values)


def _value(trial: FrozenTrial) -> float | None:
    values = trial.values
    if not values or len(values) != 1 or not math.isfinite(values[0]):
        return None
    return float(values[0])


@dataclass
class Eta:
    """Time left for a count to reach its total, from the rate since the first look.

    Counts done before the first look (a resumed variant) do not make the rate; until one
    more is done there is no estimate (None)."""

    clock: Callable[[], float] = time.monotonic
    _start: dict[str, tuple[float, int]] = field(default_factory=dict)

    def elapsed(self, label: str) -> float:
        started = self._start.get(label)
        return 0.0 if started is None else self.clock() - started[0]

    def remaining(self, label: str, done: int, total: int) -> float | None:
        now = self.clock()
        started_at, done_at_start = self._start.setdefault(label, (now, done))
        if done >= total:
            return 0.0
        gained = done - done_at_start
        if gained <= 0:
            return None
        return (now - started_at) / gained * (total - done)


def clock_text(seconds: float | None) -> str:
    """h:mm:ss, or "?" when unknown."""
    if seconds is None:
        return "?"
    whole = round(max(seconds, 0.0))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
