"""A job's turn on its worker's device: trials share it, benchmarks have it to themselves.

The policy, and why:
- A trial holds a shared turn while its objective runs, so the K pool processes of
  `hpoq worker --slots K` (and any other worker on the same device) train side by side.
- A benchmark holds an exclusive turn while it measures: latency taken next to training
  measures the training as much as the model. It waits for the trials running on the
  device to end rather than stopping them (a trial is minutes of work, a measurement
  seconds), and from the moment it asks no new trial starts there, so it waits at most
  for the longest trial in flight. The slots idle meanwhile: the price of clean figures.
- A trial that runs out of memory while sharing (HPO config `out_of_memory: retry_alone`,
  on a worker with more than one slot) runs once more in an exclusive turn, with the
  process's memory cap lifted: same trial, same parameters, same seed.
- Turns are leases (`core.coordination.device_lease`): kept alive by a heartbeat every
  third of a lease, and lapsing one lease period after their holder dies.

A device is named by host and CUDA_VISIBLE_DEVICES: the workers pinned to one GPU of a
host take turns on it, and on a host without GPUs the workers not pinned to one share its
CPU (a benchmark there is as disturbed by training as on a GPU).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from hpoq.config.settings import Settings
from hpoq.core.coordination.device_lease import DeviceLease
from hpoq.core.coordination.heartbeat import Heartbeat
from hpoq.workers.accelerator_memory import (
    is_out_of_memory,
    release_accelerator_memory,
    whole_device_memory,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S = 0.25
WAIT_LOG_EVERY_S = 60.0


def device_id(settings: Settings) -> str:
    """`host/cuda:N` for a worker pinned to GPU N, `host/cpu` when CUDA_VISIBLE_DEVICES is
    empty, `host/default` when it is unset."""
    visible = settings.cuda_visible_devices
    if visible is None:
        device = "default"
    elif not visible.strip():
        device = "cpu"
    else:
        device = f"cuda:{visible.strip()}"
    return f"{socket.gethostname()}/{device}"


def turn_owner(job_id: str) -> str:
    """Unique per job delivery and process: a redelivery elsewhere never shares a turn."""
    return f"{job_id}@{socket.gethostname()}:{os.getpid()}"


class DeviceTurns:
    def __init__(self, lease: DeviceLease, lease_s: float, poll_s: float = POLL_S) -> None:
        self.lease = lease
        self._ttl = lease_s
        self._poll = min(poll_s, lease_s / 4)

    @contextmanager
    def shared(self, owner: str, what: str) -> Iterator[None]:
        """Wait while a benchmark has the device or waits for it, then share it."""

        def attempt() -> str | None:
            granted = self.lease.acquire_shared(owner, self._ttl)
            return None if granted else "a benchmark or a trial run alone has it or waits for it"

        self._wait(attempt, what, "shared")
        beat = Heartbeat(
            lambda: self.lease.extend_shared(owner, self._ttl), self._ttl / 3, f"device-{owner}"
        )
        try:
            with beat:
                yield
        finally:
            self._leave(lambda: self.lease.release_shared(owner))

    @contextmanager
    def exclusive(self, owner: str, what: str) -> Iterator[None]:
        """Wait until the trials running on the device have ended, then hold it alone, with
        the process's memory cap lifted."""

        def attempt() -> str | None:
            result = self.lease.acquire_exclusive(owner, self._ttl)
            if result.granted:
                return None
            if result.shared_holders:
                return f"{result.shared_holders} running trial(s)"
            return f"{result.ahead} (ahead of it)"

        try:
            self._wait(attempt, what, "alone")
        except BaseException:
            self._leave(lambda: self.lease.release_exclusive(owner))  # withdraw the request
            raise
        beat = Heartbeat(
            lambda: self.lease.extend_exclusive(owner, self._ttl), self._ttl / 3, f"device-{owner}"
        )
        try:
            with beat, whole_device_memory():
                yield
        finally:
            self._leave(lambda: self.lease.release_exclusive(owner))

    def _wait(self, attempt: Callable[[], str | None], what: str, how: str) -> None:
        """Poll `attempt` (None when granted, else what is in the way) until it is granted;
        one log line when the wait starts, then one a minute. No deadline: live holders
        end, dead ones lapse one lease period after their last heartbeat."""
        started = time.monotonic()
        logged: float | None = None
        while (blocker := attempt()) is not None:
            waited = time.monotonic() - started
            if logged is None or waited - logged >= WAIT_LOG_EVERY_S:
                log.info(
                    "%s waits to use device %s %s: %s (%.0f s so far)",
                    what,
                    self.lease.device_id,
                    how,
                    blocker,
                    waited,
                )
                logged = waited
            time.sleep(self._poll)
        if logged is not None:
            log.info(
                "%s uses device %s %s after %.1f s",
                what,
                self.lease.device_id,
                how,
                time.monotonic() - started,
            )

    def _leave(self, release: Callable[[], object]) -> None:
        try:
            release()
        except Exception as exc:  # Redis away: the turn lapses one lease period later
            log.warning("could not give back a turn on device %s: %s", self.lease.device_id, exc)


def run_sharing_device(
    turns: DeviceTurns,
    owner: str,
    call: Callable[[], T],
    *,
    what: str,
    retry_alone: bool,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """`call()` in a shared turn; when it runs out of memory and `retry_alone`, once more in
    an exclusive turn (after `before_retry`). Any other outcome is the caller's."""
    try:
        with turns.shared(owner, what):
            return call()
    except Exception as exc:
        if not (retry_alone and is_out_of_memory(exc)):
            raise
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        log.warning(
            "%s ran out of memory sharing device %s; running it again alone: %s",
            what,
            turns.lease.device_id,
            first_line,
        )
        # The failed attempt's frames hold its tensors: drop them before the retry.
        traceback.clear_frames(exc.__traceback__)
    release_accelerator_memory()
    if before_retry is not None:
        before_retry()
    with turns.exclusive(owner, what):
        return call()
