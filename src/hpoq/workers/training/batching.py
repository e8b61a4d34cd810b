"""Which sentences go into which batch, so that padding follows the data.

A batch is padded to its longest sentence (`encoding.collate`), so the compute a batch
costs is set by its longest member. Random batches of short texts with a long tail
(tweets: about 18 words on average, some over 50) pad most rows to several times their
length. Grouping sentences of similar length removes most of that padding:

- training, `length_grouped_batches`: shuffle, cut into chunks of CHUNK_BATCHES batches,
  sort each chunk by length blurred by a random factor in [1 - LENGTH_JITTER, 1 +
  LENGTH_JITTER], cut it into batches and shuffle the batches. Batches hold sentences of
  similar length, yet which sentences meet in a batch and the order of the batches stay
  random and change every epoch (the same seed gives the same batches). This is
  transformers' `LengthGroupedSampler` (megabatches of 50 batches) with two changes: the
  batches themselves are shuffled, and the sort is blurred. The batch holding the longest
  sentence goes first, so a batch that does not fit in memory fails in the first step,
  not at the end.

  Why the blur: where a sentence's length says much about its content (the synthetic
  template data; on a small set one chunk holds every sentence), an exact sort puts
  near-identical sentences together in the same batches every epoch, and a model trained
  for a few epochs scored up to 0.02 macro-F1 lower than with shuffled batches (5 seeds,
  `benchmarks/bench_length_grouping.py`). With sentences within about 20% of each
  other's length mixed, the scores matched shuffled batches within 0.01 on both data
  sets, for 17% padding on tweet-like lengths instead of 4% (53% with shuffled batches).
- evaluation and inference, `sorted_batches`: batches of consecutive sentences in length
  order; the caller maps results back to the original positions.

Every function returns lists of indices into the caller's sentences, each index exactly
once, in ceil(count / batch_size) batches: one batch at most is short (a chunk holds a
whole number of batches), so the number of optimizer steps does not change.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

CHUNK_BATCHES = 50
LENGTH_JITTER = 0.2


def shuffled_batches(count: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of a random permutation of `range(count)` (no grouping)."""
    order = list(range(count))
    rng.shuffle(order)
    return _cut(order, batch_size)


def length_grouped_batches(
    lengths: Sequence[int],
    batch_size: int,
    rng: random.Random,
    chunk_batches: int = CHUNK_BATCHES,
    jitter: float = LENGTH_JITTER,
) -> list[list[int]]:
    """Random batches of similar-length sentences (see the module docstring)."""
    _check(batch_size)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * max(1, chunk_batches)
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        key = {i: lengths[i] * rng.uniform(1.0 - jitter, 1.0 + jitter) for i in part}
        members = sorted(part, key=key.__getitem__, reverse=True)
        batches.extend(_cut(members, batch_size))
    rng.shuffle(batches)
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of consecutive sentences in length order (shortest first; ties keep order)."""
    _check(batch_size)
    return _cut(sorted(range(len(lengths)), key=lambda i: lengths[i]), batch_size)


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded positions that are padding when each batch is padded to its
    longest sentence: 0 when every batch holds sentences of one length."""
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 0.0 if padded == 0 else 1.0 - real / padded


def _cut(order: list[int], batch_size: int) -> list[list[int]]:
    _check(batch_size)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _check(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
