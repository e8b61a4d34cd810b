"""Which Redis to use: HPOQ_REDIS_URL, else the embedded server under the output directory.

The embedded server outlives the command that started it (its port is recorded next to
its data), so `hpoq submit`, workers and `hpoq status` on this machine share it; `hpoq
run` stops the one it started.
"""

from __future__ import annotations

from pathlib import Path

from hpoq.core.coordination.embedded import EmbeddedRedis
from hpoq.core.runtime import Runtime

PORT_FILE = "redis.port"


def _recorded_url(directory: Path) -> str | None:
    port_file = directory / PORT_FILE
    if not port_file.is_file():
        return None
    port = port_file.read_text().strip()
    if not port.isdigit():
        return None
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except (redis.RedisError, OSError):
        return None
    return url


def resolve_redis_url(runtime: Runtime, *, start: bool = True) -> tuple[str, EmbeddedRedis | None]:
    """The Redis URL to use, and the embedded server when this call started it."""
    if runtime.settings.redis_url is not None:
        return runtime.settings.redis_url.get_secret_value(), None
    directory = runtime.layout.redis_dir()
    url = _recorded_url(directory)
    if url is not None or not start:
        if url is None:
            from hpoq.errors import ServiceError

            raise ServiceError(
                "no Redis: set HPOQ_REDIS_URL, or start the embedded one with `hpoq run`"
            )
        return url, None
    server = EmbeddedRedis(directory).start()
    (directory / PORT_FILE).write_text(str(server.port))
    return server.url, server
