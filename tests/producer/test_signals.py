"""StopSignals in-process: the first signal raises, later ones (or any during clean-up) only
hurry, a signal during `deferred()` waits for the block to end. Real signals, sent to this
process; the handlers in place before are restored afterwards."""

from __future__ import annotations

import os
import signal

import pytest

from hpoq.producer.signals import STOP_SIGNALS, Interrupted, StopSignals


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)  # delivered before the next bytecode of this thread


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_the_first_signal_raises_with_its_exit_code(signum: int) -> None:
    with pytest.raises(Interrupted) as exc, StopSignals():
        _send(signum)
    assert exc.value.exit_code == 128 + signum
    assert str(exc.value) == f"stopped by {signal.Signals(signum).name}"
    assert isinstance(exc.value, KeyboardInterrupt)  # `except Exception` does not swallow it


def test_signals_ignored_at_start_are_handled_and_the_old_disposition_comes_back() -> None:
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGHUP)}
    try:
        with pytest.raises(Interrupted), StopSignals():
            _send(signal.SIGHUP)  # as under nohup: ignored, yet it stops the command
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_during_clean_up_signals_only_hurry() -> None:
    with StopSignals() as signals:
        hurry = signals.begin_cleanup()
        _send(signal.SIGTERM)
        _send(signal.SIGINT)
        assert hurry.is_set()
        assert signals.received == [signal.SIGTERM, signal.SIGINT]


def _interrupted_then_cleaned_up(signals: StopSignals) -> bool:
    """A command body hit by Ctrl-C, whose clean-up gets a second Ctrl-C."""
    try:
        _send(signal.SIGINT)
    finally:
        hurry = signals.begin_cleanup()
        assert not hurry.is_set()
        _send(signal.SIGINT)  # the impatient second Ctrl-C: no exception here
    return hurry.is_set()


def test_a_second_signal_hurries_the_clean_up_the_first_one_started() -> None:
    signals = StopSignals()
    with signals, pytest.raises(Interrupted):
        _interrupted_then_cleaned_up(signals)
    assert signals.hurry.is_set() and signals.received == [signal.SIGINT, signal.SIGINT]


def _start_a_process(signals: StopSignals, steps: list[str]) -> None:
    with signals.deferred():
        _send(signal.SIGTERM)
        steps.append("recorded")  # still running: the process gets recorded
    steps.append("after")


def test_a_signal_while_a_process_is_being_started_waits_for_the_block() -> None:
    steps: list[str] = []
    with StopSignals() as signals, pytest.raises(Interrupted):
        _start_a_process(signals, steps)
    assert steps == ["recorded"]
