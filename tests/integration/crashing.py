"""Objectives that take their whole worker process down, for the crash-loop fault test.

Workers import them by dotted path (`tests.integration.crashing:sigkill`), like any
objective; the test starts workers from the repository root so `tests` is importable.
"""

from __future__ import annotations

import os
import signal
from typing import Any


def sigkill(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    """The process kills itself, as the kernel's OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def hard_exit(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    """The process exits without unwinding (a native library calling exit)."""
    os._exit(3)
