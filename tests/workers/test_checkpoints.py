"""Checkpoint saving, save_only_best under concurrency, and reader locks (torch-free)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hpoq.config.base import Direction
from hpoq.errors import HpoqError
from hpoq.workers.training.checkpoints import (
    cleanup_checkpoints,
    commit_checkpoint,
    open_checkpoint_for_reading,
    read_best_pointer,
)


def _writer(trial_number: int) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        (directory / "weights.json").write_text(json.dumps({"trial": trial_number}))

    return write


def commit(
    study_dir: Path,
    number: int,
    value: float,
    direction: Direction = Direction.MAXIMIZE,
    save_only_best: bool = True,
) -> Path | None:
    return commit_checkpoint(
        study_dir,
        study_dir / f"trial_{number}",
        number,
        value,
        direction,
        _writer(number),
        save_only_best=save_only_best,
    )


def kept(study_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in study_dir.glob("*/checkpoint"))


def leftovers(study_dir: Path) -> list[Path]:
    return list(study_dir.glob("*/.checkpoint.*"))


def test_only_the_best_checkpoint_is_kept(tmp_path: Path) -> None:
    assert commit(tmp_path, 0, 0.5) == tmp_path / "trial_0" / "checkpoint"
    assert commit(tmp_path, 1, 0.7) is not None
    assert commit(tmp_path, 2, 0.6) is None  # worse: nothing written
    assert commit(tmp_path, 3, 0.7) is None  # tie: the lower trial number stays best
    assert commit(tmp_path, 4, float("nan")) is None
    assert kept(tmp_path) == ["trial_1"]
    pointer = read_best_pointer(tmp_path)
    assert pointer is not None
    assert (pointer.trial_number, pointer.value) == (1, 0.7)
    assert pointer.checkpoint == "trial_1/checkpoint"
    content = json.loads((tmp_path / "trial_1" / "checkpoint" / "weights.json").read_text())
    assert content == {"trial": 1}
    assert leftovers(tmp_path) == []


def test_minimize_keeps_the_lowest(tmp_path: Path) -> None:
    for number, value in enumerate([0.3, 0.1, 0.2]):
        commit(tmp_path, number, value, Direction.MINIMIZE)
    assert kept(tmp_path) == ["trial_1"]


def test_without_save_only_best_all_are_kept_and_the_pointer_follows_the_best(
    tmp_path: Path,
) -> None:
    for number, value in enumerate([0.3, 0.9, 0.2]):
        commit(tmp_path, number, value, save_only_best=False)
    assert kept(tmp_path) == ["trial_0", "trial_1", "trial_2"]
    pointer = read_best_pointer(tmp_path)
    assert pointer is not None
    assert pointer.trial_number == 1


def test_a_failing_write_leaves_nothing(tmp_path: Path) -> None:
    def broken(directory: Path) -> None:
        (directory / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        commit_checkpoint(tmp_path, tmp_path / "trial_0", 0, 0.9, Direction.MAXIMIZE, broken)
    assert kept(tmp_path) == []
    assert leftovers(tmp_path) == []
    assert read_best_pointer(tmp_path) is None


def test_threads_finishing_at_once_leave_exactly_the_best(tmp_path: Path) -> None:
    values = [0.41, 0.93, 0.12, 0.77, 0.93, 0.55, 0.08, 0.66]  # trial 1 and 4 tie: 1 wins
    start = threading.Barrier(len(values))

    def finish(number: int) -> None:
        start.wait()
        commit(tmp_path, number, values[number])

    with ThreadPoolExecutor(len(values)) as pool:
        for future in [pool.submit(finish, n) for n in range(len(values))]:
            future.result()
    assert kept(tmp_path) == ["trial_1"]
    pointer = read_best_pointer(tmp_path)
    assert pointer is not None
    assert pointer.trial_number == 1
    assert leftovers(tmp_path) == []


def _commit_in_process(study_dir: str, number: int, value: float, start: Any) -> None:
    start.wait()
    commit(Path(study_dir), number, value)


def test_processes_finishing_at_once_leave_exactly_the_best(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    values = [0.2, 0.8, 0.5, 0.7]
    start = context.Barrier(len(values))
    workers = [
        context.Process(target=_commit_in_process, args=(str(tmp_path), n, v, start))
        for n, v in enumerate(values)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * len(values)
    assert kept(tmp_path) == ["trial_1"]
    assert leftovers(tmp_path) == []


def test_a_held_reader_lock_prevents_deletion_until_released(tmp_path: Path) -> None:
    first = commit(tmp_path, 0, 0.5)
    assert first is not None
    with open_checkpoint_for_reading(first) as held:
        assert commit(tmp_path, 1, 0.9) is not None
        assert kept(tmp_path) == ["trial_0", "trial_1"]  # in use: skipped, not deleted
        assert cleanup_checkpoints(tmp_path) == []
        assert (held / "weights.json").is_file()
    assert cleanup_checkpoints(tmp_path) == [first]
    assert kept(tmp_path) == ["trial_1"]


def test_a_skipped_checkpoint_goes_with_the_next_commit(tmp_path: Path) -> None:
    first = commit(tmp_path, 0, 0.5)
    assert first is not None
    with open_checkpoint_for_reading(first):
        commit(tmp_path, 1, 0.6)
    commit(tmp_path, 2, 0.7)
    assert kept(tmp_path) == ["trial_2"]


def test_reading_a_deleted_checkpoint_fails_clearly(tmp_path: Path) -> None:
    first = commit(tmp_path, 0, 0.5)
    commit(tmp_path, 1, 0.9)
    assert first is not None
    with pytest.raises(HpoqError, match="does not exist"), open_checkpoint_for_reading(first):
        pass
    with (
        pytest.raises(HpoqError, match="does not exist"),
        open_checkpoint_for_reading(tmp_path / "trial_9" / "checkpoint"),
    ):
        pass


def test_a_rerun_of_the_same_trial_replaces_its_checkpoint(tmp_path: Path) -> None:
    commit(tmp_path, 0, 0.5, save_only_best=False)

    def second(directory: Path) -> None:
        (directory / "weights.json").write_text('{"trial": "again"}')

    commit_checkpoint(tmp_path, tmp_path / "trial_0", 0, 0.6, Direction.MAXIMIZE, second)
    assert json.loads((tmp_path / "trial_0/checkpoint/weights.json").read_text()) == {
        "trial": "again"
    }
    assert leftovers(tmp_path) == []
