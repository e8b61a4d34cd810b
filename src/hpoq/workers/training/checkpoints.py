"""Trial checkpoints: atomic saves, the best-of-variant pointer, and deletion that spares readers.

Layout inside a study (variant) folder:

    <study_dir>/.checkpoints.lock          exclusive while best.json changes or checkpoints go
    <study_dir>/best.json                  {"trial_number", "value", "direction", "checkpoint"}
    <study_dir>/trial_<n>/checkpoint/      model, tokenizer, labels.json, hpoq_checkpoint.json
    <study_dir>/trial_<n>/checkpoint.lock  shared while a reader loads the checkpoint

Contract:
- A checkpoint directory is complete or absent: it is written under a temporary name in
  the same trial folder and renamed into place.
- best.json only changes under the study lock, so concurrent trials of one variant agree
  on the best: the better value wins, and on a tie the lower trial number.
- With save_only_best, other checkpoints are deleted under the study lock, each only if
  its reader lock can be taken at once; a checkpoint in use is skipped and removed by a
  later commit or `cleanup_checkpoints`. Locks are fcntl.flock locks, released by the
  kernel when a process dies, so a crash never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpoq.config.base import Direction
from hpoq.core.trial_record import write_json_atomic
from hpoq.errors import HpoqError

CHECKPOINT_DIR = "checkpoint"
BEST_FILE = "best.json"
STUDY_LOCK = ".checkpoints.lock"
LABELS_FILE = "labels.json"
METADATA_FILE = "hpoq_checkpoint.json"
_TMP_PREFIX = ".checkpoint.tmp-"
_TRASH_PREFIX = ".checkpoint.trash-"


@dataclass(frozen=True)
class BestPointer:
    trial_number: int
    value: float
    direction: Direction
    checkpoint: str  # relative to the study folder

    def is_beaten_by(self, value: float, trial_number: int) -> bool:
        if math.isnan(value):
            return False
        if value == self.value:
            return trial_number < self.trial_number
        return value > self.value if self.direction is Direction.MAXIMIZE else value < self.value


def commit_checkpoint(
    study_dir: Path,
    trial_dir: Path,
    trial_number: int,
    value: float,
    direction: Direction,
    write: Callable[[Path], None],
    save_only_best: bool = True,
) -> Path | None:
    """Save a finished trial's checkpoint with `write(directory)`; None when it was not kept.

    With save_only_best a trial that does not beat the current best writes nothing.
    """
    if save_only_best and not _beats(read_best_pointer(study_dir), value, trial_number):
        return None  # cheap early exit; decided again under the lock below
    trial_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=trial_dir))
    try:
        write(tmp)  # the slow part, outside the study lock
        with _study_lock(study_dir):
            best = read_best_pointer(study_dir)
            better = _beats(best, value, trial_number)
            if save_only_best and not better:
                return None
            target = trial_dir / CHECKPOINT_DIR
            _move_into_place(tmp, target)
            if better:
                pointer = BestPointer(
                    trial_number, value, direction, target.relative_to(study_dir).as_posix()
                )
                write_json_atomic(study_dir / BEST_FILE, asdict(pointer))
                best = pointer
            if save_only_best and best is not None:
                _remove_others(study_dir, keep=study_dir / best.checkpoint)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_best_pointer(study_dir: Path) -> BestPointer | None:
    """The best checkpoint of a variant, or None (no pointer, unreadable, or its files gone)."""
    try:
        raw = json.loads((study_dir / BEST_FILE).read_text(encoding="utf-8"))
        pointer = BestPointer(
            trial_number=int(raw["trial_number"]),
            value=float(raw["value"]),
            direction=Direction(raw["direction"]),
            checkpoint=str(raw["checkpoint"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pointer if (study_dir / pointer.checkpoint).is_dir() else None


def cleanup_checkpoints(study_dir: Path) -> list[Path]:
    """Delete every checkpoint but the best one that no reader holds; returns what went."""
    with _study_lock(study_dir):
        best = read_best_pointer(study_dir)
        keep = study_dir / best.checkpoint if best is not None else None
        return _remove_others(study_dir, keep)


@contextlib.contextmanager
def open_checkpoint_for_reading(path: Path) -> Iterator[Path]:
    """Hold a checkpoint so that no cleanup deletes it until the block ends.

    Raises HpoqError when the checkpoint does not exist (never written, or already deleted).
    """
    if not path.parent.is_dir():
        raise HpoqError(f"checkpoint {path} does not exist")
    fd = os.open(_reader_lock(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        # Checked under the lock: a deleter holds it exclusively while it removes files.
        if not path.is_dir():
            raise HpoqError(f"checkpoint {path} does not exist (never written or deleted)")
        yield path
    finally:
        os.close(fd)


def write_model_files(
    directory: Path,
    model: Any,
    tokenizer: Any,
    labels: Sequence[str],
    metadata: Mapping[str, Any],
) -> None:
    """What a checkpoint of the built-in trainer holds: weights, tokenizer, labels, metadata."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_json_atomic(directory / LABELS_FILE, {"labels": list(labels)})
    write_json_atomic(directory / METADATA_FILE, dict(metadata))


def _beats(best: BestPointer | None, value: float, trial_number: int) -> bool:
    if best is None:
        return not math.isnan(value)
    return best.is_beaten_by(value, trial_number)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename tmp to target; an older checkpoint of the same trial (a rerun) goes first."""
    if target.exists():
        with _exclusive_reader_lock(target, blocking=True):
            _discard(target)
    os.rename(tmp, target)


def _remove_others(study_dir: Path, keep: Path | None) -> list[Path]:
    removed: list[Path] = []
    for checkpoint in sorted(study_dir.glob(f"*/{CHECKPOINT_DIR}")):
        if keep is not None and checkpoint == keep:
            continue
        with _exclusive_reader_lock(checkpoint, blocking=False) as acquired:
            if acquired and checkpoint.is_dir():
                _discard(checkpoint)
                removed.append(checkpoint)
    # Left by a process that died in the middle of a deletion.
    for leftover in study_dir.glob(f"*/{_TRASH_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


def _discard(checkpoint: Path) -> None:
    """Rename first so the checkpoint disappears in one step, then delete at leisure."""
    trash = checkpoint.with_name(f"{_TRASH_PREFIX}{os.getpid()}-{checkpoint.stat().st_ino}")
    os.rename(checkpoint, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _reader_lock(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.lock")


@contextlib.contextmanager
def _exclusive_reader_lock(checkpoint: Path, blocking: bool) -> Iterator[bool]:
    fd = os.open(_reader_lock(checkpoint), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def _study_lock(study_dir: Path) -> Iterator[None]:
    study_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(study_dir / STUDY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
