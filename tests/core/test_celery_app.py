"""The Celery app's settings that hpoq's guarantees rest on."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from hpoq.core.celery_app import create_app, restore_interval_s


def test_json_only_late_acks_one_job_at_a_time() -> None:
    conf = create_app("redis://127.0.0.1:6379/0").conf
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1


def test_task_events_are_off_until_someone_watches() -> None:
    conf = create_app("redis://127.0.0.1:6379/0").conf
    assert not conf.worker_send_task_events
    assert not conf.task_send_sent_event
    assert not conf.task_track_started
    assert not conf.result_extended
    assert conf.worker_enable_remote_control  # how Flower switches events on


def test_a_pool_process_has_time_to_load_its_imports() -> None:
    assert create_app("redis://127.0.0.1:6379/0").conf.worker_proc_alive_timeout >= 30


@pytest.mark.parametrize(("visibility", "interval"), [(3, 1), (20, 5), (3600, 10)])
def test_unacked_messages_are_swept_within_a_quarter_of_the_timeout(
    visibility: int, interval: int
) -> None:
    assert restore_interval_s(visibility) == interval


def test_rediss_checks_the_certificate_unless_told_otherwise() -> None:
    conf = create_app("rediss://h:6380/0").conf
    assert conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert not create_app("rediss://h:6380/0?ssl_cert_reqs=none").conf.broker_use_ssl


def test_amqps_checks_the_certificate_and_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from kombu.transport.pyamqp import SSLTransport

    app = create_app("redis://h:6379/0", broker="amqps://u:p@rabbit.example:5671/hpoq")
    assert app.conf.broker_use_ssl == {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    # What kombu hands py-amqp on connecting: the URL's host name to check.
    given: dict[str, Any] = {}

    def connection(**options: Any) -> None:
        given.update(options)
        raise ConnectionRefusedError("not connecting in a unit test")

    monkeypatch.setattr(SSLTransport, "Connection", staticmethod(connection))
    with app.connection_for_write() as conn, pytest.raises(ConnectionRefusedError):
        conn.transport.establish_connection()
    assert given["ssl"] == {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "rabbit.example"}
    assert not create_app("redis://h:6379/0", broker="amqp://u:p@r:5672//").conf.broker_use_ssl
