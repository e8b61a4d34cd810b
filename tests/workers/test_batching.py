"""Which sentences share a batch: length-grouped training batches, sorted evaluation batches."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from hpoq.core.datasets.synthetic import tweet_like_sentences
from hpoq.workers.training.batching import (
    length_grouped_batches,
    padding_fraction,
    shuffled_batches,
    sorted_batches,
)

# Token counts of tweet-like sentences ([CLS] and [SEP] included), as the trainer sees them.
LENGTHS = [len(s.tokens) + 2 for s in tweet_like_sentences("batching", 1000)]


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


@pytest.mark.parametrize("batch_size", [1, 7, 32, 1000, 1500])
def test_every_sentence_once_in_ceil_n_over_b_batches(batch_size: int) -> None:
    rng = random.Random(0)
    for batches in (
        length_grouped_batches(LENGTHS, batch_size, rng),
        shuffled_batches(len(LENGTHS), batch_size, rng),
        sorted_batches(LENGTHS, batch_size),
    ):
        assert sorted(_flat(batches)) == list(range(len(LENGTHS)))
        assert len(batches) == math.ceil(len(LENGTHS) / batch_size)
        assert sum(len(b) < batch_size for b in batches) <= 1


def test_grouping_removes_most_padding() -> None:
    grouped = length_grouped_batches(LENGTHS, 32, random.Random(0))
    shuffled = shuffled_batches(len(LENGTHS), 32, random.Random(0))
    print(
        f"padding: shuffled {padding_fraction(LENGTHS, shuffled):.3f}, "
        f"grouped {padding_fraction(LENGTHS, grouped):.3f}"
    )
    assert padding_fraction(LENGTHS, shuffled) > 0.5
    assert padding_fraction(LENGTHS, grouped) < 0.2  # lengths within about 20% of each other
    assert padding_fraction(LENGTHS, sorted_batches(LENGTHS, 32)) < 0.1
    exact = length_grouped_batches(LENGTHS, 32, random.Random(0), jitter=0.0)
    assert padding_fraction(LENGTHS, exact) < 0.1


def test_grouped_batches_are_reproducible_and_change_every_epoch() -> None:
    first, second = random.Random(5), random.Random(5)
    epochs_a = [length_grouped_batches(LENGTHS, 16, first) for _ in range(3)]
    epochs_b = [length_grouped_batches(LENGTHS, 16, second) for _ in range(3)]
    assert epochs_a == epochs_b  # same seed, same batches, epoch after epoch
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    # Which sentences meet in a batch changes too, not only the order of the batches.
    assert {frozenset(b) for b in epochs_a[0]} != {frozenset(b) for b in epochs_a[1]}
    other = length_grouped_batches(LENGTHS, 16, random.Random(6))
    assert other != epochs_a[0]


def test_grouped_batch_order_is_random_but_the_longest_batch_comes_first() -> None:
    batches = length_grouped_batches(LENGTHS, 16, random.Random(1))
    longest = [max(LENGTHS[i] for i in b) for b in batches]
    assert longest[0] == max(LENGTHS)
    rest = longest[1:]
    assert rest != sorted(rest) and rest != sorted(rest, reverse=True)
    rises = sum(b > a for a, b in itertools.pairwise(rest))
    assert 0.3 < rises / (len(rest) - 1) < 0.7  # about as many rises as falls: shuffled


def test_grouped_batches_hold_similar_lengths() -> None:
    """A typical batch spans lengths within the sort's blur (about +-20%); only the sparse
    tail of long sentences gives wider batches."""
    spans = sorted(
        max(LENGTHS[i] for i in batch) / min(LENGTHS[i] for i in batch)
        for batch in length_grouped_batches(LENGTHS, 16, random.Random(2))
    )
    assert spans[len(spans) // 2] <= 1.5
    shuffled = sorted(
        max(LENGTHS[i] for i in batch) / min(LENGTHS[i] for i in batch)
        for batch in shuffled_batches(len(LENGTHS), 16, random.Random(2))
    )
    assert shuffled[len(shuffled) // 2] > 3


def test_sorted_batches_follow_length_and_keep_ties_in_order() -> None:
    batches = sorted_batches(LENGTHS, 10)
    flat = _flat(batches)
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS)
    for a, b in itertools.pairwise(flat):
        if LENGTHS[a] == LENGTHS[b]:
            assert a < b


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_batches(LENGTHS, 0, random.Random(0))
    with pytest.raises(ValueError, match="batch_size"):
        sorted_batches(LENGTHS, 0)
