"""GPU memory of a worker's pool process: given back between jobs, shared between slots.

A full garbage collection walks every object the process holds: about half a million once
torch, transformers, MLflow and Optuna are loaded, 0.3-0.35 s each time (measured on this
project's CPU host and on an H100 host, where it was 85% of the time between two trials).
A job that dropped its model needs none: reference counting freed its tensors at once. So
the collection runs only when tensors are still allocated after a job (a reference cycle,
or an objective that kept something alive), and the objects loaded when the process
started are frozen out of every collection.

When K pool processes share one GPU (`hpoq worker --slots K`), each caps torch's caching
allocator to its share of the device before its first job (`cap_process_memory`), and
lifts the cap while it holds the device alone (`whole_device_memory`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def release_accelerator_memory() -> bool:
    """Return the allocator's cached GPU memory to the device; collect garbage first only
    when tensors are still allocated. True when a collection ran. Never imports torch."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return False
    collected = False
    if torch.cuda.memory_allocated() > 0:
        gc.collect()
        collected = True
    torch.cuda.empty_cache()
    return collected


_modules_when_frozen = {"count": -1}


def freeze_loaded_objects() -> bool:
    """When modules were loaded since the last call (always, the first time), collect and
    move every object alive now (modules, their caches) out of the collector's reach, so
    later collections, automatic or not, walk only what jobs create. True when it froze."""
    if len(sys.modules) == _modules_when_frozen["count"]:
        return False
    gc.collect()
    gc.freeze()
    _modules_when_frozen["count"] = len(sys.modules)
    return True


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation that did not fit: torch's OutOfMemoryError (CUDA, or a process over its
    memory share), a RuntimeError saying so (CPU allocator, older torch), or MemoryError.
    Never imports torch."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# Device memory the allocator's cap leaves aside per process: its CUDA context and
# kernels live outside the caching allocator (about 0.5 GiB on an H100 with torch 2.x).
CONTEXT_RESERVE_MIB = 768
_share: dict[str, float | None] = {"fraction": None}


def memory_share(total_mib: float, slots: int) -> float:
    """The fraction of a device's memory one of `slots` processes may allocate: an equal
    part of what is left once every process's context is set aside."""
    usable = max(0.0, total_mib - slots * CONTEXT_RESERVE_MIB)
    return max(0.01, usable / (slots * total_mib))


def cap_process_memory(slots: int) -> float | None:
    """In a pool process of a worker whose `slots` processes share one device: cap torch's
    allocator to this process's share (torch.cuda.set_per_process_memory_fraction), so a
    trial that grows past its share fails with OutOfMemoryError in its own process instead
    of starving the others. Nothing without CUDA, and nothing for a single slot. Returns
    the fraction set."""
    if slots <= 1:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    total_mib = torch.cuda.get_device_properties(0).total_memory / 2**20
    fraction = memory_share(total_mib, slots)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    _share["fraction"] = fraction
    return fraction


@contextmanager
def whole_device_memory() -> Iterator[None]:
    """Lift this process's cap while it has the device to itself (a benchmark, a trial
    retried alone); the cap comes back afterwards."""
    fraction = _share["fraction"]
    torch = sys.modules.get("torch")
    if fraction is None or torch is None:
        yield
        return
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    try:
        yield
    finally:
        release_accelerator_memory()
        torch.cuda.set_per_process_memory_fraction(fraction, 0)
