"""Celery app, tasks and the workloads the GPU workers run."""
