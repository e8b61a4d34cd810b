"""Token-classification datasets: readers, writers and the synthetic generator (torch-free)."""

from hpoq.core.datasets.readers import (
    SPLITS,
    Sentence,
    SplitName,
    read_conll,
    read_jsonl,
    read_split,
    split_path,
)
from hpoq.core.datasets.synthetic import ensure_dataset, generate_split

__all__ = [
    "SPLITS",
    "Sentence",
    "SplitName",
    "ensure_dataset",
    "generate_split",
    "read_conll",
    "read_jsonl",
    "read_split",
    "split_path",
]
