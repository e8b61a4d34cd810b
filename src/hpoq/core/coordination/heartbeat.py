"""A background thread that keeps a lease alive while a job runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `beat()` every `interval_s` until stopped. `beat` returns False when the lease
    is lost; `lost` is then set so the job can refuse to publish a result."""

    def __init__(self, beat: Callable[[], bool], interval_s: float, name: str) -> None:
        self._beat = beat
        self._interval = interval_s
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._beat():
                    self.lost.set()
                    log.warning("lease lost: %s", self._thread.name)
            except Exception as exc:  # a Redis blip must not kill the job; the lease may lapse
                log.warning("heartbeat failed (%s): %s", self._thread.name, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No beat after this returns (idempotent): call it before releasing the lease."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
