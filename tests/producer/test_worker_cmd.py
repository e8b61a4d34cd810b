"""`hpoq worker`'s command line: one worker per GPU, task events only when asked for."""

from __future__ import annotations

from hpoq.producer.commands.worker_cmd import worker_argv


def test_a_gpu_worker_runs_one_job_at_a_time_under_its_gpu_name() -> None:
    argv = worker_argv(1, "hpo", 1, "INFO")
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1"
    assert argv[argv.index("--queues") + 1] == "hpo"
    assert argv[argv.index("--hostname") + 1].startswith("hpoq-gpu1-")


def test_task_events_are_off_unless_asked_for() -> None:
    assert "--task-events" not in worker_argv(None, "hpo,benchmark", 1, "INFO")
    assert "--task-events" in worker_argv(None, "hpo,benchmark", 1, "INFO", task_events=True)
