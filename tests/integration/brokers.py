"""The brokers the integration suite runs on: Redis always, RabbitMQ where one answers.

RabbitMQ: HPOQ_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672). Each test gets a
private virtual host, made with `rabbitmqctl` or the management API and deleted after
it, so tests never see each other's messages (hpoq's queue names are fixed). Without a
server, or without a way to make a virtual host, the RabbitMQ cases skip and say why.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import redis
from celery import Celery
from kombu import Connection  # type: ignore[attr-defined]

from hpoq.core.celery_app import create_app, is_amqp
from hpoq.core.jobs import JOB_QUEUES

AMQP_SERVER = os.environ.get("HPOQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
MANAGEMENT_PORT = 15672


def amqp_answers(url: str = AMQP_SERVER) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 1):
            return True
    except OSError:
        return False


def _rabbitmqctl(*args: str) -> bool:
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        return False
    try:
        done = subprocess.run([binary, *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _management(method: str, path: str, body: dict[str, str] | None = None) -> bool:
    parts = urlsplit(AMQP_SERVER)
    request = urllib.request.Request(
        f"http://{parts.hostname}:{MANAGEMENT_PORT}/api/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"content-type": "application/json"},
    )
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def private_vhost() -> Iterator[str | None]:
    """The URL of a fresh virtual host on the test server, deleted afterwards (None when
    no virtual host can be made)."""
    parts = urlsplit(AMQP_SERVER)
    user = parts.username or "guest"
    name = f"hpoq-test-{uuid.uuid4().hex[:12]}"
    made = None
    if _rabbitmqctl("add_vhost", name) and _rabbitmqctl(
        "set_permissions", "-p", name, user, ".*", ".*", ".*"
    ):
        made = "ctl"
    elif _management("PUT", f"vhosts/{quote(name, safe='')}") and _management(
        "PUT",
        f"permissions/{quote(name, safe='')}/{quote(user, safe='')}",
        {"configure": ".*", "write": ".*", "read": ".*"},
    ):
        made = "api"
    if made is None:
        yield None
        return
    try:
        yield f"{AMQP_SERVER.rstrip('/')}/{quote(name, safe='')}"
    finally:
        if made == "ctl":
            _rabbitmqctl("delete_vhost", name)
        else:
            _management("DELETE", f"vhosts/{quote(name, safe='')}")


@dataclass(frozen=True)
class Broker:
    """Where a test's jobs queue: `url` is HPOQ_BROKER_URL (the Redis itself for Redis)."""

    name: str
    url: str

    @property
    def amqp(self) -> bool:
        return is_amqp(self.url)

    def env(self) -> dict[str, str]:
        """What workers and CLI commands need on top of HPOQ_REDIS_URL."""
        return {"HPOQ_BROKER_URL": self.url} if self.amqp else {}

    def app(self, redis_url: str) -> Celery:
        return create_app(redis_url, broker=self.url)

    def waiting(self, queue: str) -> int:
        """Messages waiting on `queue` (not those delivered and unacknowledged)."""
        if not self.amqp:
            client = redis.Redis.from_url(self.url)
            try:
                return int(client.llen(queue))
            finally:
                client.close()
        with Connection(self.url) as conn:
            channel = conn.channel()
            try:
                return int(channel.queue_declare(queue, passive=True).message_count)
            except conn.channel_errors:
                return 0
            finally:
                channel.close()

    def quiet(self, coordination: redis.Redis) -> bool:
        """Nothing queued. On Redis also nothing delivered and unacknowledged; RabbitMQ
        holds unacknowledged deliveries out of sight until their consumer goes."""
        if not self.amqp:
            from tests.integration.probes import quiet

            return quiet(coordination)
        return all(self.waiting(queue) == 0 for queue in JOB_QUEUES)
