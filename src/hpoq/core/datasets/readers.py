"""Read token-classification datasets (CoNLL columns or JSONL) into sentences.

Every error names the file and the line, so a bad row in a large file is quick to find.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeGuard

from hpoq.config.data import DataConfig
from hpoq.core.paths import safe_relative
from hpoq.errors import ConfigError, InputError

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
DOCSTART = "-DOCSTART-"


@dataclass(frozen=True)
class Sentence:
    """One sentence: words and their BIO tags, the same length."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]


def split_path(data: DataConfig, data_dir: Path, split: SplitName) -> Path:
    """The file of one split on this machine; refuses paths that leave data_dir."""
    return safe_relative(data_dir, getattr(data.splits, split), what=f"splits.{split}")


def split_file(data: DataConfig, data_dir: Path, split: SplitName) -> Path:
    """The file of one split, which must exist and be a file; ConfigError names the field."""
    path = split_path(data, data_dir, split)
    if path.is_dir():
        raise ConfigError(f"data {data.name!r}: splits.{split}: {path} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"data {data.name!r}: splits.{split}: {path} does not exist")
    return path


def read_split(data: DataConfig, data_dir: Path, split: SplitName) -> list[Sentence]:
    """Read one split in the config's format, checking every tag against data.labels."""
    path = split_file(data, data_dir, split)
    if data.format == "conll":
        return read_conll(path, data.labels)
    return read_jsonl(path, data.labels)


def read_conll(path: Path, labels: Collection[str] | None = None) -> list[Sentence]:
    """Token first, tag last, columns split on tabs or spaces; a blank line ends a sentence."""
    allowed = frozenset(labels) if labels is not None else None
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in _lines(path):
        stripped = line.strip()
        if not stripped:
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags)))
                tokens, tags = [], []
            continue
        if stripped.startswith(DOCSTART):
            continue
        columns = stripped.split()
        if len(columns) < 2:
            raise InputError(f"{path}:{number}: expected a token and a tag column, got {line!r}")
        _check_tag(columns[-1], allowed, path, number)
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:
        sentences.append(Sentence(tuple(tokens), tuple(tags)))
    return sentences


def read_jsonl(path: Path, labels: Collection[str] | None = None) -> list[Sentence]:
    """One JSON object per line: {"tokens": [...], "labels": [...]}; blank lines are ignored."""
    allowed = frozenset(labels) if labels is not None else None
    sentences: list[Sentence] = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
        tokens = row.get("tokens") if isinstance(row, dict) else None
        tags = row.get("labels") if isinstance(row, dict) else None
        if not _is_str_list(tokens) or not _is_str_list(tags):
            raise InputError(f"{path}:{number}: expected {{'tokens': [str], 'labels': [str]}}")
        if not tokens or len(tokens) != len(tags):
            raise InputError(
                f"{path}:{number}: {len(tokens)} tokens and {len(tags)} labels; "
                "need the same non-zero number"
            )
        if any(not token.strip() for token in tokens):
            raise InputError(f"{path}:{number}: empty or blank token")
        for tag in tags:
            _check_tag(tag, allowed, path, number)
        sentences.append(Sentence(tuple(tokens), tuple(tags)))
    return sentences


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _check_tag(tag: str, allowed: frozenset[str] | None, path: Path, number: int) -> None:
    if allowed is not None and tag not in allowed:
        raise InputError(
            f"{path}:{number}: label {tag!r} is not in the data config's labels "
            f"({', '.join(sorted(allowed))})"
        )


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
