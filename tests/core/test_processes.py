"""Children that die with their parent, and processes known only by pid (real processes)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hpoq.core.processes import command_line, die_with_parent, pid_alive, terminate_pid

PARENT = """
import subprocess, time
from hpoq.core.processes import die_with_parent
child = subprocess.Popen(["sleep", "120"], preexec_fn=die_with_parent())
print(child.pid, flush=True)
time.sleep(120)
"""


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_started_with_die_with_parent_goes_when_its_parent_is_killed() -> None:
    assert die_with_parent() is not None
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert pid_alive(child) and "sleep" in (command_line(child) or "")
    finally:
        parent.kill()  # SIGKILL: no clean-up of its own
        parent.wait()
    assert _wait_gone(child)


def test_terminate_pid_stops_a_process_that_is_not_our_child() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(1, flush=True)\ntime.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    stubborn.stdout.readline()  # its handler is in place
    terminate_pid(stubborn.pid, timeout_s=0.5)  # ignores SIGTERM: SIGKILL follows
    assert stubborn.wait(timeout=10) == -9
    assert not pid_alive(stubborn.pid)
