"""A job's turn on its device, in one process against a real Redis: trials share it, a retry
after running out of memory has it alone, every turn is given back, and GPU memory caps."""

from __future__ import annotations

import threading
import time

import pytest
import redis
import torch

from hpoq.config.settings import Settings
from hpoq.core.coordination.device_lease import DeviceLease, DeviceState
from hpoq.core.coordination.keys import RedisKeys
from hpoq.workers import accelerator_memory
from hpoq.workers.device_turns import DeviceTurns, device_id, run_sharing_device

KEYS = RedisKeys("turns")
EMPTY = DeviceState(None, None, ())


@pytest.fixture
def turns(real_redis: redis.Redis) -> DeviceTurns:
    return DeviceTurns(DeviceLease(real_redis, KEYS, "host/cuda:0"), lease_s=10, poll_s=0.02)


def _oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")


def test_an_out_of_memory_trial_runs_again_alone(turns: DeviceTurns) -> None:
    seen: list[DeviceState] = []
    retries: list[str] = []

    def objective() -> float:
        seen.append(turns.lease.state())
        if len(seen) == 1:
            raise _oom()
        return 0.5

    value = run_sharing_device(
        turns,
        "job-1@w:1",
        objective,
        what="trial 0",
        retry_alone=True,
        before_retry=lambda: retries.append("cleared"),
    )
    assert value == 0.5
    assert retries == ["cleared"]
    assert seen[0] == DeviceState(None, None, ("job-1@w:1",))  # first attempt: shared
    assert seen[1] == DeviceState("job-1@w:1", None, ())  # the retry: alone
    assert turns.lease.state() == EMPTY


def test_the_retry_waits_for_the_other_slots_and_keeps_new_trials_out(
    turns: DeviceTurns,
) -> None:
    other_slot = "job-2@w:2"
    assert turns.lease.acquire_shared(other_slot, 10)
    attempts: list[float] = []

    def objective() -> float:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise _oom()
        return 1.0

    worker = threading.Thread(
        target=run_sharing_device,
        args=(turns, "job-1@w:1", objective),
        kwargs={"what": "trial 0", "retry_alone": True},
    )
    worker.start()
    deadline = time.monotonic() + 30
    while turns.lease.state().wanted != "job-1@w:1" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert turns.lease.state().wanted == "job-1@w:1"
    assert len(attempts) == 1  # waiting: the other slot's trial still runs
    assert not turns.lease.acquire_shared("job-3@w:3", 10)  # no new trial starts meanwhile
    released = time.monotonic()
    turns.lease.release_shared(other_slot)
    worker.join(timeout=30)
    assert len(attempts) == 2 and attempts[1] >= released
    assert turns.lease.state() == EMPTY


@pytest.mark.parametrize(
    ("error", "retry_alone"),
    [(_oom(), False), (RuntimeError("shape mismatch"), True), (ValueError("nan"), True)],
)
def test_other_failures_are_not_retried_and_the_turn_is_given_back(
    turns: DeviceTurns, error: BaseException, retry_alone: bool
) -> None:
    calls = []

    def objective() -> float:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        run_sharing_device(turns, "job@w:1", objective, what="t", retry_alone=retry_alone)
    assert calls == [1]
    assert turns.lease.state() == EMPTY


def test_a_second_out_of_memory_fails_the_trial(turns: DeviceTurns) -> None:
    def objective() -> float:
        raise _oom()

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_sharing_device(turns, "job@w:1", objective, what="t", retry_alone=True)
    assert turns.lease.state() == EMPTY


def test_a_wait_that_is_interrupted_withdraws_its_request(
    turns: DeviceTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert turns.lease.acquire_shared("trial@w:2", 10)

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("hpoq.workers.device_turns.time.sleep", interrupted)
    with pytest.raises(KeyboardInterrupt), turns.exclusive("bench@w:1", "benchmark"):
        pass
    assert turns.lease.state() == DeviceState(None, None, ("trial@w:2",))
    assert turns.lease.acquire_shared("trial@w:3", 10)  # trials are not held back


def test_a_device_is_named_by_host_and_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hpoq.workers.device_turns.socket.gethostname", lambda: "gpu-host")
    assert device_id(Settings(cuda_visible_devices="1")) == "gpu-host/cuda:1"
    assert device_id(Settings(cuda_visible_devices="")) == "gpu-host/cpu"
    assert device_id(Settings(cuda_visible_devices=None)) == "gpu-host/default"


def test_worker_slots_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOQ_WORKER_SLOTS", "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    settings = Settings()
    assert settings.worker_slots == 4 and settings.cuda_visible_devices == "2"


# --- memory: recognising running out of it, and each slot's share -------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_oom(), True),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: out of memory"),
            True,
        ),
        (MemoryError(), True),
        (RuntimeError("CUDA error: device-side assert triggered"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_is_recognised(error: BaseException, expected: bool) -> None:
    assert accelerator_memory.is_out_of_memory(error) is expected


def test_each_slot_gets_an_equal_share_after_the_contexts() -> None:
    h200 = 143_771.0  # MiB
    assert accelerator_memory.memory_share(h200, 1) == pytest.approx(1 - 768 / h200)
    shares = [accelerator_memory.memory_share(h200, k) for k in (2, 4)]
    assert shares[0] < 0.5 and shares[1] < 0.25
    assert 4 * shares[1] * h200 + 4 * 768 == pytest.approx(h200)


def test_no_cap_without_cuda_or_with_one_slot() -> None:
    assert not torch.cuda.is_available()  # this suite runs on CPUs
    assert accelerator_memory.cap_process_memory(1) is None
    assert accelerator_memory.cap_process_memory(4) is None
    with accelerator_memory.whole_device_memory():
        pass
