"""Progress of `hpoq run`: the events of trials that end, time left, and plain lines that
reach a file as they happen."""

from __future__ import annotations

import io

import optuna
from rich.console import Console

from hpoq.config.base import Direction
from hpoq.producer.progress_display import LineDisplay, run_display
from hpoq.producer.run_events import (
    BenchmarkProgress,
    BenchmarkSettled,
    Eta,
    Started,
    TrialWatch,
    VariantProgress,
    clock_text,
)

State = optuna.trial.TrialState


def trials(*states: tuple[State, float | None]) -> list[optuna.trial.FrozenTrial]:
    made = []
    for number, (state, value) in enumerate(states):
        trial = optuna.trial.create_trial(
            state=state, value=value if state is State.COMPLETE else None
        )
        trial.number = number
        made.append(trial)
    return made


def test_a_watch_reports_each_trial_once_when_it_ends_and_the_best_so_far() -> None:
    watch = TrialWatch("b hpo_b", 4, "macro-f1", Direction.MAXIMIZE)
    progress, news = watch.update(trials((State.COMPLETE, 0.5), (State.RUNNING, None)))
    assert news == []  # ended before the watch began: not news
    assert (progress.done, progress.running, progress.best) == (1, 1, 0.5)
    progress, news = watch.update(
        trials((State.COMPLETE, 0.5), (State.COMPLETE, 0.7), (State.FAIL, None))
    )
    assert [(n.number, n.state, n.value) for n in news] == [(1, "COMPLETE", 0.7), (2, "FAIL", None)]
    assert (progress.done, progress.best) == (2, 0.7)
    _, news = watch.update(trials((State.COMPLETE, 0.5), (State.COMPLETE, 0.7), (State.FAIL, None)))
    assert news == []
    minimize = TrialWatch("b", 2, "loss", Direction.MINIMIZE)
    progress, _ = minimize.update(trials((State.COMPLETE, 0.5), (State.COMPLETE, 0.2)))
    assert progress.best == 0.2


def test_time_left_follows_the_rate_since_the_first_look() -> None:
    now = [100.0]
    eta = Eta(clock=lambda: now[0])
    assert eta.remaining("v", 2, 10) is None  # nothing done yet since the first look
    now[0] = 160.0
    assert eta.remaining("v", 4, 10) == 180.0  # 2 in 60 s: 6 left, 180 s
    assert eta.remaining("v", 10, 10) == 0.0
    assert clock_text(3725) == "1:02:05" and clock_text(None) == "?"


def test_lines_reach_the_file_one_per_event() -> None:
    sink = io.StringIO()
    display = LineDisplay(Console(file=sink, width=80))
    display(Started("/out", "/out/logs", "sqlite:///x", "/out/reports/e.html"))
    progress = VariantProgress("tiny hpo_tiny", 1, 4, "macro-f1", 0.91, 1)
    watch = TrialWatch("tiny hpo_tiny", 4, "macro-f1", Direction.MAXIMIZE)
    watch.update([])
    _, [finished] = watch.update(trials((State.COMPLETE, 0.91)))
    display(progress)
    display(finished)
    display(BenchmarkSettled("tiny hpo_tiny trial 0", True, "p50 1 ms", BenchmarkProgress(1, 1)))
    lines = sink.getvalue().splitlines()
    assert any("worker logs: /out/logs/worker-<n>.log" in line for line in lines)
    assert any("trial 0 COMPLETE macro-f1=0.9100 (1/4 finished" in line for line in lines)
    assert any("benchmark measured: tiny hpo_tiny trial 0: p50 1 ms (1/1" in line for line in lines)
    # A long line is one line in a log, whatever the console's width.
    assert all(line.startswith("[") for line in lines)


def test_bars_only_on_a_terminal() -> None:
    file_console = Console(file=io.StringIO())
    with run_display(file_console, file_console) as observer:
        assert isinstance(observer, LineDisplay)
    terminal = Console(file=io.StringIO(), force_terminal=True)
    with run_display(terminal, file_console) as observer:
        assert isinstance(observer, LineDisplay)  # stderr to a file: lines
    with run_display(terminal, terminal) as observer:
        assert not isinstance(observer, LineDisplay)
