"""A word-level tokenizer built from the training data, for backbones built from a config.

It is a real `PreTrainedTokenizerFast`, so training, checkpoints (`save_pretrained`) and
the benchmark treat it exactly like the tokenizer of a pretrained model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)


def build_vocab(sentences: Iterable[Sequence[str]], min_frequency: int = 1) -> dict[str, int]:
    """Special tokens first, then words by falling frequency (ties alphabetical): deterministic."""
    counts = Counter(word for sentence in sentences for word in sentence)
    words = sorted(
        (w for w, n in counts.items() if n >= min_frequency and w not in SPECIAL_TOKENS),
        key=lambda w: (-counts[w], w),
    )
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}


def build_word_tokenizer(
    sentences: Iterable[Sequence[str]], max_length: int, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """A fast tokenizer with one id per known word, [UNK] otherwise, wrapped in [CLS] ... [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = build_vocab(sentences, min_frequency)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Words arrive already split; splitting only on whitespace keeps one id per word.
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        model_max_length=max_length,
    )
