"""An objective and a benchmark runner that fail the way real ones do (an exception), for
tests of how a failed job shows. Workers import them by dotted path from the repository
root, like `tests.integration.crashing`."""

from __future__ import annotations

from typing import Any

ERROR = "loss diverged at step 3"


def diverges(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    raise FloatingPointError(ERROR)


def out_of_memory(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("CUDA out of memory: tried to allocate 2.00 GiB")
