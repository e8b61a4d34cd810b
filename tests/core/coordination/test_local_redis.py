"""The embedded Redis under the output directory: who starts it, who stops it, and what
happens to one that a crashed `hpoq run` left behind. Real redis-server processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpoq.config.settings import Settings
from hpoq.core.coordination.embedded import PID_FILE, EmbeddedRedis
from hpoq.core.coordination.local_redis import OWNER_FILE, PORT_FILE, resolve_redis_url
from hpoq.core.processes import pid_alive, start_time
from hpoq.core.runtime import Runtime
from hpoq.errors import ServiceError


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))


@pytest.fixture
def leftovers() -> Iterator[list[EmbeddedRedis]]:
    """Servers a test starts itself; stopped at the end whatever happened."""
    servers: list[EmbeddedRedis] = []
    yield servers
    for server in servers:
        server.stop()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _left_by(runtime: Runtime, servers: list[EmbeddedRedis], owner: dict[str, object]) -> int:
    """A server recorded under the output dir as if `owner` had started it; its pid."""
    directory = runtime.layout.redis_dir()
    server = EmbeddedRedis(directory).start()
    servers.append(server)
    (directory / PORT_FILE).write_text(str(server.port))
    (directory / OWNER_FILE).write_text(json.dumps(owner))
    assert server.pid is not None
    return server.pid


def test_a_run_starts_its_own_server_and_stops_it(runtime: Runtime) -> None:
    _, server = resolve_redis_url(runtime, owned=True)
    assert server is not None and server.pid is not None
    directory = runtime.layout.redis_dir()
    owner = json.loads((directory / OWNER_FILE).read_text())
    assert owner == {"pid": os.getpid(), "start": start_time(os.getpid()), "owned_by_run": True}
    assert (directory / PORT_FILE).read_text() == str(server.port)
    assert int((directory / PID_FILE).read_text()) == server.pid
    pid = server.pid
    server.stop()
    assert not pid_alive(pid)


def test_a_server_left_by_a_dead_run_is_adopted_and_stopped(
    runtime: Runtime, leftovers: list[EmbeddedRedis]
) -> None:
    pid = _left_by(runtime, leftovers, {"pid": _dead_pid(), "start": 1, "owned_by_run": True})
    url, adopted = resolve_redis_url(runtime, owned=True)
    assert adopted is not None and adopted.pid == pid  # reused, not a second server
    assert url == leftovers[0].url
    adopted.stop()
    assert not pid_alive(pid)


def test_a_server_whose_owner_pid_was_reused_is_adopted(
    runtime: Runtime, leftovers: list[EmbeddedRedis]
) -> None:
    """The recorded pid lives, but it is another process than the run that started it."""
    stale = {"pid": os.getpid(), "start": -1, "owned_by_run": True}
    pid = _left_by(runtime, leftovers, stale)
    _, adopted = resolve_redis_url(runtime, owned=True)
    assert adopted is not None and adopted.pid == pid


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param({"owned_by_run": False}, id="shared-by-submit"),
        pytest.param("live-run", id="a-live-run"),
        pytest.param(None, id="unknown"),
    ],
)
def test_a_server_someone_else_owns_is_used_and_left_running(
    runtime: Runtime, leftovers: list[EmbeddedRedis], owner: object
) -> None:
    if owner == "live-run":
        owner = {"pid": os.getpid(), "start": start_time(os.getpid()), "owned_by_run": True}
    pid = _left_by(runtime, leftovers, owner if isinstance(owner, dict) else {})
    if owner is None:
        (runtime.layout.redis_dir() / OWNER_FILE).unlink()
    url, adopted = resolve_redis_url(runtime, owned=True)
    assert adopted is None and url == leftovers[0].url
    assert pid_alive(pid)


def test_submit_starts_a_shared_server_that_outlives_it(
    runtime: Runtime, leftovers: list[EmbeddedRedis]
) -> None:
    url, mine = resolve_redis_url(runtime, start=True)
    assert mine is None  # nothing for the caller to stop
    directory = runtime.layout.redis_dir()
    assert json.loads((directory / OWNER_FILE).read_text())["owned_by_run"] is False
    port = int((directory / PORT_FILE).read_text())
    attached = EmbeddedRedis.attach(directory, port)
    assert attached is not None
    leftovers.append(attached)
    assert resolve_redis_url(runtime, start=False) == (url, None)


def test_without_a_server_and_without_starting_one_says_so(runtime: Runtime) -> None:
    with pytest.raises(ServiceError, match="no Redis"):
        resolve_redis_url(runtime, start=False)
    assert not runtime.layout.redis_dir().exists()


def test_a_stale_port_file_starts_a_fresh_server(runtime: Runtime) -> None:
    directory = runtime.layout.redis_dir()
    directory.mkdir(parents=True)
    (directory / PORT_FILE).write_text("1")  # nothing listens there
    (directory / PID_FILE).write_text(str(_dead_pid()))
    url, server = resolve_redis_url(runtime, owned=True)
    assert server is not None
    try:
        assert url == server.url and (directory / PORT_FILE).read_text() == str(server.port)
    finally:
        server.stop()


def test_a_stopped_servers_data_is_read_from_a_copy_that_goes_with_the_reader(
    runtime: Runtime,
) -> None:
    """`hpoq status` after `hpoq run`: the run stopped its server; a snapshot of the data
    answers, and the data the next run starts from is not touched."""
    import redis

    url, server = resolve_redis_url(runtime, owned=True)
    assert server is not None
    client = redis.Redis.from_url(url)
    client.hset("failed_jobs", "job-1", "boom")
    client.rpush("hpo", "queued")
    client.close()
    server.stop()
    directory = runtime.layout.redis_dir()
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}

    url, snapshot = resolve_redis_url(runtime, start=False, snapshot=True)
    assert snapshot is not None and snapshot.directory != directory
    copy = snapshot.directory
    reader = redis.Redis.from_url(url)
    try:
        assert reader.hget("failed_jobs", "job-1") == b"boom"
        assert reader.llen("hpo") == 1
    finally:
        reader.close()
        snapshot.stop()
    assert not copy.exists()
    after = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    assert after == before


def test_with_no_data_the_error_names_the_output_directory_and_what_starts_one(
    runtime: Runtime,
) -> None:
    with pytest.raises(ServiceError) as exc:
        resolve_redis_url(runtime, start=False, snapshot=True)
    message = str(exc.value)
    assert str(runtime.layout.redis_dir()) in message
    assert "`hpoq run` or `hpoq submit`" in message and "HPOQ_REDIS_URL" in message
