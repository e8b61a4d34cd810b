"""The reaper of one worker process, on a daemon thread (core/reaper.py has the logic).

Started in every pool process of every worker: the processes take turns under the reaper's
lock, so one pass runs at a time cluster-wide, every third of a lease, and the reaper lives
as long as any worker does. A pass that fails (Redis or MLflow away) is logged and tried
again at the next interval.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from hpoq.core.reaper import Reaper

log = logging.getLogger(__name__)


class ReaperThread:
    def __init__(self, make_reaper: Callable[[], Reaper], interval_s: float) -> None:
        self._make = make_reaper
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpoq-reaper", daemon=True)

    def start(self) -> ReaperThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _wait_s(self) -> float:
        # Jittered below the interval, so that passes never drift further apart than it.
        return self._interval * random.uniform(0.8, 1.0)

    def _run(self) -> None:
        reaper: Reaper | None = None
        while not self._stop.wait(self._wait_s()):
            try:
                if reaper is None:
                    reaper = self._make()
                report = reaper.run_once()
            except Exception as exc:
                log.warning("reaper pass failed: %s", exc)
                continue
            if report is not None and (
                report.reaped or report.benchmarks_requeued or report.variants_finished
            ):
                log.warning(
                    "reaper: reaped %s, replacements %s, benchmarks enqueued again %s, "
                    "variants finished %s",
                    report.reaped,
                    report.replacements,
                    report.benchmarks_requeued,
                    report.variants_finished,
                )
