"""Stop signals for a command that owns processes (`hpoq run`): SIGINT, SIGTERM, SIGHUP.

The handlers are installed explicitly, whatever the command inherited: under `nohup`, or
started with `&` from a script, SIGINT and SIGHUP arrive ignored, and `timeout`, CI
cancellation, `docker stop` and systemd would then leave the workers behind.

- The first signal raises `Interrupted` in the main thread, like Ctrl-C's
  KeyboardInterrupt, so the command's `finally` blocks stop what it started.
- From `begin_cleanup()` on, no signal raises any more (an exception there would skip the
  rest of the clean-up and leave processes behind): each one sets `hurry`, which
  shortens the waits of the clean-up, and the clean-up still runs to its end.
- `deferred()` holds a signal back while a process is being started and recorded, so
  none is left running unrecorded; the signal is raised when the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by the first stop signal; exit code 128 + its number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context manager owning SIGINT, SIGTERM and SIGHUP for its duration."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.hurry = threading.Event()
        self._cleaning_up = False
        self._deferring = 0
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    @property
    def first(self) -> int | None:
        return self.received[0] if self.received else None

    def begin_cleanup(self) -> threading.Event:
        """From now on signals only hurry the clean-up; returns the `hurry` event."""
        self._cleaning_up = True
        if len(self.received) > 1:
            self.hurry.set()
        return self.hurry

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a first signal back until the block ends (starting and recording a process)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        pending, self._pending = self._pending, None
        if pending is not None and not self._cleaning_up and self._deferring == 0:
            raise Interrupted(pending)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._cleaning_up or len(self.received) > 1:
            self.hurry.set()
            return
        if self._deferring:
            self._pending = signum
            return
        raise Interrupted(signum)
