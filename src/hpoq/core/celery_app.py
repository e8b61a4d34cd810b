"""The Celery app, configured for GPU jobs of seconds to hours.

- JSON only, in both directions: a pickled payload is refused, never executed.
- One job per process and a prefetch of one: a worker never sits on jobs it cannot run.
- acks_late with reject_on_worker_lost: a job whose worker dies is delivered again; the
  job's own idempotency (trial budget, benchmark lease) makes that redelivery harmless.
- The broker is HPOQ_BROKER_URL (`broker_url`), else the coordination Redis; results,
  counters, leases and dead letters always live in that Redis (`coordination_url`).
- On a Redis broker: visibility_timeout above the longest job, so Redis does not hand a
  running job to a second worker (HPOQ_VISIBILITY_TIMEOUT, default 12 h). Workers sweep
  for messages past it every few seconds (kombu's own default is every 100 s), so a job
  whose worker died comes back soon after the timeout.
- On RabbitMQ (amqp://): no visibility timeout; a dead worker's unacknowledged job goes
  back on its queue the moment its connection drops. RabbitMQ's own `consumer_timeout`
  (30 min by default) closes the channel of a delivery unacknowledged for longer: the
  broker must set it above the longest job (docker-compose.yml does, from
  HPOQ_VISIBILITY_TIMEOUT; README "RabbitMQ broker").
- A worker survives any bytes on its queues: it consumes through `broker_transport`
  (Redis) or `amqp_transport` (RabbitMQ), which dead-letter what kombu or Celery cannot
  handle before they see it; what Celery refuses by itself is dead-lettered by the signal
  handlers in `dead_letter_signals.py`. Producers keep kombu's own transports.
- rediss:// without `ssl_cert_reqs` verifies the server certificate (CERT_REQUIRED), as
  redis-py does; Celery would otherwise refuse the URL.
- Task events only while someone watches: Flower switches them on in every worker (it
  broadcasts `enable_events` every few seconds while it runs; remote control is on), and
  `hpoq worker --task-events` starts a worker with them on. Always-on events, the STARTED
  state and extended results cost 2-3 ms per job, about a third of a bare Celery round
  trip (benchmarks/bench_dispatch.py --ablate), and nothing in hpoq reads them: `hpoq
  status` asks the workers what they run, and `--wait` reads results.

This module imports neither torch nor the task code: the producer uses it to send jobs by
name. Workers load `hpoq.workers.tasks` through `include`.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from hpoq.config.settings import AMQP_SCHEMES, load_settings
from hpoq.core.jobs import (
    JOB_QUEUES,
    QUEUE_BENCHMARK,
    QUEUE_HPO,
    QUEUE_TRAIN,
    TASK_RUN_BENCHMARK,
    TASK_RUN_FINAL_TRAINING,
    TASK_RUN_TRIAL,
)

SCREENING_TRANSPORT = "hpoq.workers.broker_transport:Transport"
SCREENING_AMQP_TRANSPORTS = {
    "amqp": "hpoq.workers.amqp_transport:Transport",
    "amqps": "hpoq.workers.amqp_transport:SSLTransport",
}
# The screening transports' dead letters go to the coordination Redis, named in the
# broker's transport options ("backend" in the name: Celery masks its password in reports).
DEAD_LETTERS_OPTION = "hpoq_dead_letters_backend"
PROC_ALIVE_TIMEOUT_S = 60.0


def visibility_timeout_s() -> int:
    """HPOQ_VISIBILITY_TIMEOUT (default 12 h), parsed in config/settings.py."""
    return load_settings().visibility_timeout


def restore_interval_s(visibility_timeout: int) -> int:
    """Seconds between sweeps for unacknowledged messages past the visibility timeout."""
    return max(1, min(10, visibility_timeout // 4))


def _tls_defaults(redis_url: str) -> dict[str, int] | None:
    """Certificate checks for a rediss:// URL that does not choose them itself."""
    parts = urlsplit(redis_url)
    if parts.scheme != "rediss" or "ssl_cert_reqs" in parse_qs(parts.query):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def _amqps_defaults(broker: str) -> dict[str, Any] | None:
    """An amqps:// broker's certificate checks: the chain and the host name. py-amqp checks
    the host name only when given one; kombu fills `server_hostname: None` with the URL's."""
    if broker_scheme(broker) != "amqps":
        return None
    return {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}


def broker_scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def is_amqp(url: str) -> bool:
    return broker_scheme(url) in AMQP_SCHEMES


def broker_url(redis_url: str) -> str:
    """HPOQ_BROKER_URL, else the coordination Redis (`hpoq run` with nothing set: the
    embedded one)."""
    return load_settings().broker(redis_url)


def coordination_url(app: Celery) -> str:
    """The Redis that holds results, counters, leases and dead letters."""
    return str(app.conf.result_backend)


def _redis_transport_options() -> dict[str, Any]:
    visibility = visibility_timeout_s()
    return {
        "visibility_timeout": visibility,
        "unacked_restore_interval": restore_interval_s(visibility),
        "unacked_restore_throttle": 1,
        # Redis restarts: keep retrying instead of dying, workers reconnect on their own.
        "max_retries": None,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }


def create_app(redis_url: str, *, consumer: bool = False, broker: str | None = None) -> Celery:
    """The app; `consumer`: the app of a worker, which screens what it takes off queues.
    `broker`: the broker's URL (default: `broker_url(redis_url)`)."""
    broker = broker_url(redis_url) if broker is None else broker
    app = Celery("hpoq", broker=broker, backend=redis_url, include=["hpoq.workers.tasks"])
    results = _redis_transport_options()
    transport = dict(results) if not is_amqp(broker) else {}
    transport[DEAD_LETTERS_OPTION] = redis_url
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,  # a failed job is settled, not delivered again
        task_reject_on_worker_lost=True,
        task_track_started=False,
        task_send_sent_event=False,
        worker_send_task_events=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_enable_remote_control=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # A new pool process imports MLflow and Optuna before it says it is up: seconds on a
        # busy host. Past Celery's 4 s default the parent SIGKILLs it and starts another,
        # which can miss the deadline the same way.
        worker_proc_alive_timeout=PROC_ALIVE_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=transport,
        result_backend_transport_options=results,
        result_expires=7 * 24 * 3600,
        result_extended=False,
        task_queues=[Queue(name) for name in JOB_QUEUES],  # type: ignore[no-untyped-call]
        task_default_queue=QUEUE_HPO,
        task_routes={
            TASK_RUN_TRIAL: {"queue": QUEUE_HPO},
            TASK_RUN_BENCHMARK: {"queue": QUEUE_BENCHMARK},
            TASK_RUN_FINAL_TRAINING: {"queue": QUEUE_TRAIN},
        },
        enable_utc=True,
    )
    if consumer:
        app.conf.broker_transport = SCREENING_AMQP_TRANSPORTS.get(
            broker_scheme(broker), SCREENING_TRANSPORT
        )
    tls = _tls_defaults(redis_url)
    if tls is not None:
        app.conf.redis_backend_use_ssl = tls
    broker_tls = _amqps_defaults(broker) if is_amqp(broker) else _tls_defaults(broker)
    if broker_tls is not None:
        app.conf.broker_use_ssl = broker_tls
    return app
