"""What a backbone's `model:` names: a local directory, or a Hugging Face id in the local
cache. One answer for the producer's checks and the worker's loader (no torch here).
"""

from __future__ import annotations

import json
from pathlib import Path

from hpoq.config.hpo import looks_like_path
from hpoq.errors import InputError

MODEL_CONFIG_FILE = "config.json"
# A fast tokenizer loads from tokenizer.json, or is converted from a slow tokenizer's files.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def local_model_dir(model_ref: str) -> Path | None:
    """The local path `model_ref` names, or None when it is a hub id (not a path, and no
    such file or directory here)."""
    local = Path(model_ref).expanduser()
    return local if local.exists() or looks_like_path(model_ref) else None


def check_model_dir(path: Path, field: str) -> None:
    """A directory saved by `save_pretrained`: a config, a tokenizer and weights.

    Raises InputError naming `field` and what is missing; reads only config.json."""
    if not path.exists():
        raise InputError(f"{field}: model directory {path} does not exist")
    if not path.is_dir():
        raise InputError(f"{field}: {path} is a file, expected a model directory")
    config = path / MODEL_CONFIG_FILE
    if not config.is_file():
        raise InputError(f"{field}: {path} holds no {MODEL_CONFIG_FILE} (not a saved model)")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{field}: {config}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{field}: {config} cannot be read: {exc}") from None
    if not isinstance(parsed, dict):
        raise InputError(f"{field}: {config}: expected a JSON object")
    for kind, names in (("tokenizer", TOKENIZER_FILES), ("weights", WEIGHT_FILES)):
        if not any((path / name).is_file() for name in names):
            raise InputError(f"{field}: {path} holds no {kind} (one of {', '.join(names)})")
