"""Load a backbone for token classification: a pretrained model, or a tiny one built from config.

Nothing is ever downloaded: `model:` is a local directory or a Hugging Face id already in
the local cache (local_files_only). Whatever cannot be loaded raises InputError naming the
backbone and where it was looked for.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpoq.config.hpo import BackboneConfig, TinyArchitecture
from hpoq.core.model_source import local_model_dir
from hpoq.errors import InputError
from hpoq.workers.training.tokenizer import build_word_tokenizer

# Byte-level BPE tokenizers need this to accept words that are already split.
_PREFIX_SPACE_MODELS = frozenset({"roberta", "longformer", "bart", "gpt2", "deberta"})
_DROPOUT_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "hidden_dropout",
)


@dataclass
class LoadedModel:
    """A token-classification model with its tokenizer and the longest input it accepts."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    max_length: int
    source: str


def load_backbone(
    backbone: BackboneConfig,
    labels: Sequence[str],
    train_sentences: Iterable[Sequence[str]],
    max_length: int,
    dropout: float | None = None,
) -> LoadedModel:
    """A model with a fresh `len(labels)`-way head; `dropout` overrides the backbone's own."""
    _quiet_transformers()
    # num_labels follows from id2label; passing both makes transformers warn about a
    # pretrained config's old head even though id2label replaces it.
    label_maps = {
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }
    if backbone.architecture is not None:
        return _build_tiny(backbone.architecture, label_maps, train_sentences, max_length, dropout)
    assert backbone.model is not None
    return _load_pretrained(backbone.name, backbone.model, label_maps, max_length, dropout)


def load_checkpoint(path: Path) -> LoadedModel:
    """A model and tokenizer saved by `save_pretrained` (a trial checkpoint)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    _quiet_transformers()
    source = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForTokenClassification.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"checkpoint {source}: cannot load model or tokenizer: {exc}") from None
    return LoadedModel(model, tokenizer, _max_length(model, tokenizer, None), source)


def _build_tiny(
    arch: TinyArchitecture,
    label_maps: dict[str, Any],
    train_sentences: Iterable[Sequence[str]],
    max_length: int,
    dropout: float | None,
) -> LoadedModel:
    from transformers import (
        BertConfig,
        BertForTokenClassification,
        DistilBertConfig,
        DistilBertForTokenClassification,
    )

    length = min(max_length, arch.max_position_embeddings)
    tokenizer = build_word_tokenizer(train_sentences, length)
    rate = 0.1 if dropout is None else dropout  # 0.1: what BERT and DistilBERT default to
    common = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, **label_maps}
    model: Any
    if arch.model_type == "bert":
        model = BertForTokenClassification(
            BertConfig(
                hidden_size=arch.hidden_size,
                num_hidden_layers=arch.num_layers,
                num_attention_heads=arch.num_heads,
                intermediate_size=arch.intermediate_size,
                max_position_embeddings=arch.max_position_embeddings,
                hidden_dropout_prob=rate,
                attention_probs_dropout_prob=rate,
                **common,
            )
        )
    else:
        model = DistilBertForTokenClassification(
            DistilBertConfig(
                dim=arch.hidden_size,
                n_layers=arch.num_layers,
                n_heads=arch.num_heads,
                hidden_dim=arch.intermediate_size,
                max_position_embeddings=arch.max_position_embeddings,
                dropout=rate,
                attention_dropout=rate,
                **common,
            )
        )
    return LoadedModel(model, tokenizer, length, f"architecture:{arch.model_type}")


def _load_pretrained(
    name: str, model_ref: str, label_maps: dict[str, Any], max_length: int, dropout: float | None
) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    local = local_model_dir(model_ref)
    source = str(local) if local is not None else model_ref
    if local is not None and not local.exists():
        raise InputError(f"backbone {name!r}: model directory {source!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True, **label_maps)
        if dropout is not None:
            for field in _DROPOUT_FIELDS:
                if hasattr(config, field):
                    setattr(config, field, dropout)
        extra = {"add_prefix_space": True} if config.model_type in _PREFIX_SPACE_MODELS else {}
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **extra)
        # The checkpoint's own head (if any) has another label set: replace it.
        model = AutoModelForTokenClassification.from_pretrained(
            source, config=config, local_files_only=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"backbone {name!r}: cannot load model {source!r} (a local directory or a Hugging "
            f"Face id already in the local cache; nothing is downloaded): {exc}"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            f"backbone {name!r}: the tokenizer of {source!r} is not a fast tokenizer; "
            "word alignment needs one"
        )
    return LoadedModel(model, tokenizer, _max_length(model, tokenizer, max_length), source)


def _max_length(model: Any, tokenizer: Any, wanted: int | None) -> int:
    """The smallest of what we want, what the tokenizer allows and the position table."""
    limits = [int(tokenizer.model_max_length)]
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int):
        limits.append(positions)
    if wanted is not None:
        limits.append(wanted)
    return min(limits)


@functools.cache
def _quiet_transformers() -> None:
    """Progress bars for loading a few tensors only clutter worker logs."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
