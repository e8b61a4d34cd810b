"""Which Redis to use: HPOQ_REDIS_URL, else the embedded server under the output directory.

The embedded server's port is recorded next to its data (`redis.port`), and who started
it in `redis.owner`: `{"pid", "start", "owned_by_run"}`, the last true when an `hpoq
run` started it and stops it at its end. A server started by `hpoq submit` is shared: it
outlives the command, and `hpoq submit`, workers and `hpoq status` on this machine use it.

`hpoq run` asks with `owned=True` and stops what it gets back: a server it starts, or one
that an `hpoq run` no longer alive left behind (killed, crashed), which it adopts. A
recorded server that does not answer but whose process still lives (hung) is stopped
before a new one starts.

Reading after the server stopped (`hpoq status` after `hpoq run`, which stops the server
it started): `snapshot=True` starts a throwaway server on a copy of the data files in a
temporary folder, never on the data itself, so reading changes nothing the next run
starts from (a server loading an append-only file may rewrite it, and expired keys are
deleted on load). The snapshot stops, and its folder goes, with the caller.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from threading import Event

from hpoq.core.coordination.embedded import EmbeddedRedis, recorded_pid
from hpoq.core.processes import pid_alive, start_time, terminate_pid
from hpoq.core.runtime import Runtime
from hpoq.errors import ServiceError

PORT_FILE = "redis.port"
OWNER_FILE = "redis.owner"
# What Redis persists (an append-only file, Redis 7's folder of them, a snapshot); the
# rest of the folder (pid, port, owner, log) describes the server, not the data.
DATA_FILES = ("appendonly.aof", "appendonlydir", "dump.rdb")


def _recorded_port(directory: Path) -> int | None:
    try:
        port = (directory / PORT_FILE).read_text().strip()
    except OSError:
        return None
    return int(port) if port.isdigit() else None


def _answers(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _read_owner(directory: Path) -> dict[str, object] | None:
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _write_owner(directory: Path, *, run: bool) -> None:
    pid = os.getpid()
    payload = {"pid": pid, "start": start_time(pid), "owned_by_run": run}
    tmp = directory / f".{OWNER_FILE}.{pid}"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, directory / OWNER_FILE)


def left_by_a_dead_run(directory: Path) -> bool:
    """Whether the recorded server was started by an `hpoq run` that no longer lives."""
    owner = _read_owner(directory)
    if owner is None or owner.get("owned_by_run") is not True:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return True
    started = owner.get("start")
    return started is not None and start_time(pid) not in (None, started)  # pid reused


def has_data(directory: Path) -> bool:
    """Whether an embedded server has left data in `directory`."""
    return any((directory / name).exists() for name in DATA_FILES)


class SnapshotRedis(EmbeddedRedis):
    """A server on a copy of another server's data, in a folder removed when it stops."""

    def __init__(self, source: Path) -> None:
        self.source = source
        copy = Path(tempfile.mkdtemp(prefix="hpoq-redis-snapshot-"))
        try:
            for name in DATA_FILES:
                found = source / name
                if found.is_dir():
                    shutil.copytree(found, copy / name)
                elif found.is_file():
                    shutil.copy2(found, copy / name)
        except BaseException:
            shutil.rmtree(copy, ignore_errors=True)
            raise
        super().__init__(copy, stop_with_parent=True)

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        try:
            return super().start(timeout_s)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def stop(self, timeout_s: float = 10.0, hurry: Event | None = None) -> None:
        try:
            super().stop(timeout_s, hurry)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def no_redis_message(runtime: Runtime) -> str:
    directory = runtime.layout.redis_dir()
    return (
        f"no Redis to read: nothing has run with the output directory {runtime.layout.root} "
        f"(no embedded Redis data in {directory}); `hpoq run` or `hpoq submit` start the "
        "embedded one there, or set HPOQ_REDIS_URL (and HPOQ_OUTPUT_DIR) to the ones a "
        "cluster or another output directory uses"
    )


def resolve_redis_url(
    runtime: Runtime, *, start: bool = True, owned: bool = False, snapshot: bool = False
) -> tuple[str, EmbeddedRedis | None]:
    """The Redis URL to use, and the embedded server the caller must stop at its end.

    `owned` (`hpoq run`): start a server that stops with the caller, or adopt one a dead
    run left; a shared or live-owned server is used and left alone (None returned).
    Without `owned`, a server this call starts is shared and outlives the caller.
    `snapshot` (with `start=False`, for readers): when no embedded server answers but one
    left its data, a `SnapshotRedis` of that data, which the caller stops."""
    if runtime.settings.redis_url is not None:
        return runtime.settings.redis_url.get_secret_value(), None
    directory = runtime.layout.redis_dir()
    port = _recorded_port(directory)
    if port is not None and _answers(port):
        if owned and left_by_a_dead_run(directory):
            adopted = EmbeddedRedis.attach(directory, port)
            if adopted is not None:
                _write_owner(directory, run=True)
                return _url(port), adopted
        return _url(port), None
    if not start:
        if snapshot and has_data(directory):
            server = SnapshotRedis(directory).start()
            return server.url, server
        raise ServiceError(no_redis_message(runtime))
    if port is not None:
        hung = recorded_pid(directory, port)
        if hung is not None:
            terminate_pid(hung, timeout_s=10)
    server = EmbeddedRedis(directory, stop_with_parent=owned).start()
    (directory / PORT_FILE).write_text(str(server.port))
    _write_owner(directory, run=owned)
    return server.url, server if owned else None
