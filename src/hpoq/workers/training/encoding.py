"""Turn sentences into model inputs, align word labels to sub-tokens, and read predictions back.

Only the first sub-token of each word carries its label; the others (and special tokens)
get IGNORE_INDEX so the loss skips them. A word the tokenizer drops or truncation cuts
off is predicted as 'O', so the metric still scores every gold word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hpoq.core.datasets import Sentence

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One sentence as ids, with where each word's first sub-token sits."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE_INDEX except at first sub-tokens
    word_positions: tuple[tuple[int, int], ...]  # (token position, word index)
    n_words: int


def encode(
    tokenizer: Any,
    sentences: Sequence[Sentence],
    label2id: Mapping[str, int] | None,
    max_length: int,
) -> list[Encoded]:
    """Tokenise words that are already split, truncated to `max_length` sub-tokens.

    Without `label2id` (inference) every label is IGNORE_INDEX.
    """
    if not sentences:
        return []
    batch = tokenizer(
        [list(s.tokens) for s in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
    )
    encoded: list[Encoded] = []
    for index, sentence in enumerate(sentences):
        labels: list[int] = []
        positions: list[tuple[int, int]] = []
        previous: int | None = None
        for position, word in enumerate(batch.word_ids(index)):
            if word is not None and word != previous:
                labels.append(IGNORE_INDEX if label2id is None else label2id[sentence.tags[word]])
                positions.append((position, word))
            else:
                labels.append(IGNORE_INDEX)
            previous = word
        encoded.append(
            Encoded(
                tuple(batch["input_ids"][index]),
                tuple(labels),
                tuple(positions),
                len(sentence.tokens),
            )
        )
    return encoded


def collate(
    batch: Sequence[Encoded], pad_id: int, width: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad to the longest sentence of the batch (not to max_length: less wasted compute),
    or to `width` when given (a fixed shape; never shorter than the longest sentence)."""
    longest = max(len(item.input_ids) for item in batch)
    width = longest if width is None else max(width, longest)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(batch):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids, dtype=torch.long)
        attention[row, :length] = 1
        labels[row, :length] = torch.tensor(item.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def word_predictions(
    batch: Sequence[Encoded], predicted_ids: torch.Tensor, id2label: Mapping[int, str]
) -> list[list[str]]:
    """Word-level tags from per-token label ids of a collated batch."""
    rows = predicted_ids.tolist()
    result: list[list[str]] = []
    for item, row in zip(batch, rows, strict=True):
        tags = ["O"] * item.n_words
        for position, word in item.word_positions:
            tags[word] = id2label[row[position]]
        result.append(tags)
    return result
