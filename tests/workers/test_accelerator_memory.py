"""Between jobs GPU memory goes back to the device, and a full garbage collection runs only
when tensors are still allocated (it costs ~0.3 s in a warm worker)."""

from __future__ import annotations

import gc
import sys
import types

import pytest

from hpoq.workers import accelerator_memory
from hpoq.workers.accelerator_memory import freeze_loaded_objects, release_accelerator_memory


class FakeCuda:
    def __init__(self, available: bool, allocated: int) -> None:
        self.available = available
        self.allocated = allocated
        self.emptied = 0

    def is_available(self) -> bool:
        return self.available

    def memory_allocated(self) -> int:
        return self.allocated

    def empty_cache(self) -> None:
        self.emptied += 1


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = gc.collect

    def counting(*args: int) -> int:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(accelerator_memory.gc, "collect", counting)
    return calls


def fake_torch(monkeypatch: pytest.MonkeyPatch, cuda: FakeCuda) -> None:
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))


def test_a_job_that_freed_its_tensors_costs_no_collection(
    monkeypatch: pytest.MonkeyPatch, collections: list[int]
) -> None:
    cuda = FakeCuda(available=True, allocated=0)
    fake_torch(monkeypatch, cuda)
    assert release_accelerator_memory() is False
    assert (collections, cuda.emptied) == ([], 1)


def test_tensors_left_allocated_are_collected_before_the_cache_is_emptied(
    monkeypatch: pytest.MonkeyPatch, collections: list[int]
) -> None:
    cuda = FakeCuda(available=True, allocated=64 << 20)
    fake_torch(monkeypatch, cuda)
    assert release_accelerator_memory() is True
    assert (len(collections), cuda.emptied) == (1, 1)


def test_without_cuda_or_without_torch_nothing_happens(
    monkeypatch: pytest.MonkeyPatch, collections: list[int]
) -> None:
    cuda = FakeCuda(available=False, allocated=1)
    fake_torch(monkeypatch, cuda)
    assert release_accelerator_memory() is False
    monkeypatch.delitem(sys.modules, "torch")
    assert release_accelerator_memory() is False
    assert (collections, cuda.emptied) == ([], 0)


def test_objects_are_frozen_once_per_set_of_loaded_modules(
    monkeypatch: pytest.MonkeyPatch, collections: list[int]
) -> None:
    monkeypatch.setitem(accelerator_memory._modules_when_frozen, "count", -1)
    try:
        assert freeze_loaded_objects() is True
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert freeze_loaded_objects() is False  # nothing new loaded: no collection
        monkeypatch.setitem(sys.modules, "hpoq_test_new_module", types.ModuleType("x"))
        assert freeze_loaded_objects() is True
        assert len(collections) == 2
    finally:
        gc.unfreeze()
