"""The module-level app that `celery -A hpoq.workers.worker_app` and Flower load.

Resolves the coordination Redis from HPOQ_REDIS_URL, else the embedded Redis recorded
under the output directory (the broker: HPOQ_BROKER_URL, else that Redis), and sets the
workers' MLflow HTTP retry budget (core/retry.py). Kept apart from celery_app so that
importing the factory never connects anywhere.
"""

from __future__ import annotations

from hpoq.core.celery_app import create_app
from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy


def _redis_url() -> str:
    from hpoq.core.coordination.local_redis import resolve_redis_url
    from hpoq.core.runtime import Runtime

    resolved, _ = resolve_redis_url(Runtime.from_settings(), start=False)
    return resolved


use_mlflow_http_policy(MlflowHttpPolicy.WORKER)  # before any MLflow request (core/retry.py)
app = create_app(_redis_url(), consumer=True)
