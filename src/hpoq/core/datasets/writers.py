"""Write sentences in the formats the readers understand (used by the synthetic generator)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from hpoq.core.datasets.readers import Sentence

DataFormat = Literal["conll", "jsonl"]


def write_sentences(path: Path, sentences: Iterable[Sentence], data_format: DataFormat) -> None:
    """Write `sentences` to `path` (not atomic: callers write into a temporary directory)."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for sentence in sentences:
            if data_format == "conll":
                for token, tag in zip(sentence.tokens, sentence.tags, strict=True):
                    handle.write(f"{token}\t{tag}\n")
                handle.write("\n")
            else:
                row = {"tokens": list(sentence.tokens), "labels": list(sentence.tags)}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
