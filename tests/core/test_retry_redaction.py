"""A retried call's warning never shows a password that the server's error quotes."""

from __future__ import annotations

import logging

import pytest

from hpoq.core.retry import retry_call


def test_the_retry_warning_hides_the_password_in_the_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hpoq.core.retry.backoff_delay", lambda *a: 0.0)
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("API request to http://admin:s3cr3t-pw@mlflow:5000/api failed")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="hpoq.core.retry"):
        assert retry_call(flaky, what="MLflow call", retry_on=(ConnectionError,)) == "ok"
    assert len(caplog.records) == 2
    assert "s3cr3t-pw" not in caplog.text and "http://admin:***@mlflow:5000" in caplog.text
