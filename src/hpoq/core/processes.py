"""Child processes that must not outlive their owner, and processes known only by pid.

`die_with_parent()` is a Popen `preexec_fn` that asks Linux to send SIGTERM to the child
when the process that started it dies, however it dies (SIGKILL included): the safety
net under `hpoq run`'s own clean-up. Elsewhere it does nothing. Linux ties the request to
the thread that started the child: start such children from the main thread.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from threading import Event

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # libc's, already loaded


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive SIGTERM when its parent dies (Linux)."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a pid's
    process from a later one that reused the number; None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[19])


def command_line(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\x00", b" ").decode(errors="replace")


def terminate_pid(pid: int, timeout_s: float, hurry: Event | None = None) -> None:
    """SIGTERM a process that is not our child, wait for it to go, SIGKILL it after
    `timeout_s` (or at once when `hurry` is set)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        if hurry is not None and hurry.is_set():
            break
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
