"""`hpoq worker`'s command line: one worker per GPU, named by host and GPU, task events only
when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpoq.producer.cli import app
from hpoq.producer.commands.worker_cmd import worker_argv
from hpoq.producer.output import EXIT_BAD_INPUT


def test_a_gpu_worker_runs_one_job_at_a_time_under_its_gpu_name() -> None:
    argv = worker_argv(1, "hpo", 1, "INFO")
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1"
    assert argv[argv.index("--queues") + 1] == "hpo"


def test_task_events_are_off_unless_asked_for() -> None:
    assert "--task-events" not in worker_argv(None, "hpo,benchmark", 1, "INFO")
    assert "--task-events" in worker_argv(None, "hpo,benchmark", 1, "INFO", task_events=True)


def test_workers_are_named_by_host_and_device_never_by_process() -> None:
    argv = worker_argv(1, "hpo", 1, "INFO")
    assert argv[argv.index("--hostname") + 1] == "hpoq-gpu1@%h"
    assert worker_argv(1, "hpo", 1, "INFO") == argv  # a restarted worker keeps its name
    cpu = worker_argv(None, "hpo", 1, "INFO", index=2)
    assert cpu[cpu.index("--hostname") + 1] == "hpoq-cpu-2@%h"


@pytest.mark.parametrize(
    ("count", "gpus", "names"),
    [
        (1, 0, ["hpoq-cpu@%h"]),
        (3, 0, ["hpoq-cpu-0@%h", "hpoq-cpu-1@%h", "hpoq-cpu-2@%h"]),
        (2, 2, ["hpoq-gpu0@%h", "hpoq-gpu1@%h"]),
        (3, 2, ["hpoq-gpu0-0@%h", "hpoq-gpu1-1@%h", "hpoq-gpu0-2@%h"]),
    ],
)
def test_hpoq_run_gives_each_local_worker_its_own_stable_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int, gpus: int, names: list[str]
) -> None:
    """`hpoq run` starts `hpoq worker` processes: each one's options give a distinct name."""
    from typer.testing import CliRunner

    from hpoq.producer import local_cluster
    from hpoq.producer.cli import app
    from hpoq.producer.commands import worker_cmd

    started: list[list[str]] = []
    monkeypatch.setattr(local_cluster, "visible_gpu_count", lambda: gpus)
    monkeypatch.setattr(
        local_cluster.subprocess, "Popen", lambda argv, **_: started.append(argv) or None
    )
    local_cluster.LocalWorkers(count, {}, tmp_path).start()
    assert len(started) == count

    execs: list[list[str]] = []
    monkeypatch.setattr(worker_cmd.os, "execve", lambda path, argv, env: execs.append(argv))
    monkeypatch.setenv("HPOQ_REDIS_URL", "redis://127.0.0.1:1/0")
    for argv in started:
        options = argv[argv.index("worker") :]
        result = CliRunner().invoke(app, options)
        assert result.exit_code == 0, result.output
    assert [a[a.index("--hostname") + 1] for a in execs] == names


def test_slots_set_the_concurrency_and_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--slots K`: K pool processes, and HPOQ_WORKER_SLOTS=K for them (each caps its memory
    to its share, and a trial that runs out of it may be retried alone)."""
    started: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setenv("HPOQ_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(
        "hpoq.producer.commands.worker_cmd.os.execve",
        lambda path, argv, env: started.append((list(argv), dict(env))),
    )
    result = CliRunner().invoke(app, ["worker", "--gpu", "0", "--slots", "4"])
    assert result.exit_code == 0, result.output
    [(argv, env)] = started
    assert argv[argv.index("--concurrency") + 1] == "4"
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1"
    assert env["HPOQ_WORKER_SLOTS"] == "4"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.parametrize(
    "args", [["--slots", "0"], ["--slots", "65"], ["--slots", "2", "--concurrency", "3"]]
)
def test_bad_slots_are_refused(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(
        "hpoq.producer.commands.worker_cmd.os.execve",
        lambda *_: pytest.fail("a worker started"),
    )
    result = CliRunner().invoke(app, ["worker", *args])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "slots" in result.output
