"""A small, deterministic synthetic NER dataset (PER, ORG, LOC, DATE in BIO tags).

Sentences come from templates whose slots are filled from name lists, so the context
around an entity predicts its type and a tiny model learns the task in a few epochs.
The same `synthetic` spec always yields the same files, byte for byte.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hpoq.config.data import DataConfig, SyntheticSpec
from hpoq.core.datasets.readers import SPLITS, Sentence, SplitName, split_path
from hpoq.core.datasets.writers import write_sentences
from hpoq.core.trial_record import write_json_atomic
from hpoq.errors import ConfigError

# Bump when the generator's output changes, so old generated files are not reused silently.
GENERATOR_VERSION = 1
MANIFEST = ".hpoq-synthetic.json"
ENTITY_TYPES = ("PER", "ORG", "LOC", "DATE")

# fmt: off
_FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
          "Kofi", "Lena", "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara"]
_LAST = ["Schmidt", "Okafor", "Rossi", "Tanaka", "Novak", "Silva", "Murphy", "Kowalski",
         "Haddad", "Larsen", "Moreau", "Chen", "Duarte", "Fischer", "Ivanova", "Patel"]
_ORG = ["Acme Corp", "Northwind Traders", "Globex", "Initech", "United Nations",
        "Red Cross", "Blue River Bank", "Stark Industries", "Umbrella Labs", "Vertex Systems",
        "Orion Airlines", "Helios Energy", "Pine Street Bakery", "Nordic Rail"]
_LOC = ["Paris", "Berlin", "Lagos", "Tokyo", "New York", "Rio de Janeiro", "Cape Town",
        "Lisbon", "Oslo", "Buenos Aires", "Nairobi", "San Francisco", "Hanoi", "Quebec City"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
# fmt: on

_TEMPLATES = [
    "{PER} joined {ORG} in {DATE} .",
    "{PER} visited {LOC} on {DATE} .",
    "{ORG} opened a new office in {LOC} .",
    "On {DATE} , {PER} met {PER} in {LOC} .",
    "The annual report of {ORG} was published on {DATE} .",
    "{PER} lives in {LOC} and works for {ORG} .",
    "Shares of {ORG} rose sharply after {DATE} .",
    "{PER} said the weather in {LOC} was cold .",
    "According to {PER} , {ORG} will hire more staff .",
    "Flights from {LOC} to {LOC} were cancelled on {DATE} .",
    "{ORG} and {ORG} signed an agreement in {LOC} .",
    "{PER} was born in {LOC} on {DATE} .",
    "A spokesperson for {ORG} declined to comment .",
    "Thank you , {PER} , for the quick reply .",
    "The meeting was postponed again .",
    "Prices rose sharply this quarter .",
    "Nobody expected the results to change so quickly .",
    "We will discuss the budget after lunch .",
]


def ensure_dataset(data: DataConfig, data_dir: Path) -> None:
    """Make sure every split file exists, generating a synthetic dataset when allowed.

    Existing files are used as they are, unless a manifest shows that they were generated
    from a different spec. Generation writes into a temporary directory that is renamed
    into place in one step, so concurrent callers never see half a dataset: the first
    rename wins and the others discard their identical copy.
    """
    if needs_generation(data, data_dir):
        assert data.synthetic is not None
        _generate_into_place(data, data.synthetic, data_dir)


def needs_generation(data: DataConfig, data_dir: Path) -> bool:
    """Whether `ensure_dataset` would generate the dataset; raises what it would raise,
    and writes nothing (so `hpoq config validate` can ask)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(
            f"data {data.name!r}: local_path {data_dir} is a file, expected the directory "
            "holding the splits"
        )
    missing = [split_path(data, data_dir, split) for split in SPLITS]
    missing = [path for path in missing if not path.exists()]
    if not missing:
        _check_manifest(data, data_dir)
        return False
    names = ", ".join(str(path) for path in missing)
    if data.synthetic is None:
        raise ConfigError(f"data {data.name!r}: missing {names} (and no 'synthetic' spec)")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(
            f"data {data.name!r}: {data_dir} holds some files but not {names}; "
            "delete the directory to regenerate the synthetic dataset"
        )
    _check_labels(data)
    return True


def generate_split(spec: SyntheticSpec, split: SplitName) -> list[Sentence]:
    """The sentences of one split; each split has its own seeded stream."""
    count = {
        "train": spec.train_sentences,
        "validation": spec.validation_sentences,
        "test": spec.test_sentences,
    }[split]
    rng = random.Random(f"hpoq-synthetic-v{GENERATOR_VERSION}:{spec.seed}:{split}")
    return [_sentence(rng) for _ in range(count)]


# Word counts like tweets (WNUT17: 3,394 training tweets, 18.5 words on average, a long
# tail past 50): log-normal with median 16 and sigma 0.55 (mean about 18.6), 1 to 64 words.
TWEET_MEDIAN_WORDS = 16.0
TWEET_SIGMA = 0.55
TWEET_MAX_WORDS = 64


def tweet_length(rng: random.Random) -> int:
    """A word count drawn like a tweet's."""
    words = round(rng.lognormvariate(math.log(TWEET_MEDIAN_WORDS), TWEET_SIGMA))
    return min(TWEET_MAX_WORDS, max(1, words))


def tweet_like_sentences(seed: int | str, count: int) -> list[Sentence]:
    """`count` sentences whose lengths follow `tweet_length`: template sentences (entities
    included) strung together and cut at the drawn length, so a cut entity keeps a valid
    BIO prefix. Deterministic for a seed; independent of GENERATOR_VERSION's files."""
    rng = random.Random(f"hpoq-tweet-like:{seed}")
    sentences: list[Sentence] = []
    for _ in range(count):
        length = tweet_length(rng)
        tokens: list[str] = []
        tags: list[str] = []
        while len(tokens) < length:
            piece = _sentence(rng)
            tokens.extend(piece.tokens)
            tags.extend(piece.tags)
        sentences.append(Sentence(tuple(tokens[:length]), tuple(tags[:length])))
    return sentences


def _generate_into_place(data: DataConfig, spec: SyntheticSpec, data_dir: Path) -> None:
    _check_labels(data)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.tmp-", dir=data_dir.parent))
    try:
        for split in SPLITS:
            target = split_path(data, tmp, split)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_sentences(target, generate_split(spec, split), data.format)
        write_json_atomic(tmp / MANIFEST, _manifest(data))
        try:
            # Replaces data_dir only when it is absent or empty: the first process wins.
            os.rename(tmp, data_dir)
        except OSError:
            if not all(split_path(data, data_dir, s).is_file() for s in SPLITS):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_labels(data: DataConfig) -> None:
    needed = {"O"} | {f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I")}
    lacking = sorted(needed - set(data.labels))
    if lacking:
        raise ConfigError(
            f"data {data.name!r}: the synthetic dataset uses labels {', '.join(lacking)} "
            "that are not in 'labels'"
        )


def _manifest(data: DataConfig) -> dict[str, object]:
    payload = data.model_dump(mode="json", include={"format", "splits", "synthetic"})
    return {"generator_version": GENERATOR_VERSION, **payload}


def _check_manifest(data: DataConfig, data_dir: Path) -> None:
    """Files written by the generator for another spec must not pass for this one."""
    path = data_dir / MANIFEST
    if data.synthetic is None or not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if recorded != _manifest(data):
        raise ConfigError(
            f"data {data.name!r}: the files in {data_dir} were generated from another "
            f"synthetic spec (see {path}); delete the directory or change local_path"
        )


def _sentence(rng: random.Random) -> Sentence:
    tokens: list[str] = []
    tags: list[str] = []
    for word in rng.choice(_TEMPLATES).split():
        if word.startswith("{") and word.endswith("}"):
            kind = word[1:-1]
            entity = _ENTITY_MAKERS[kind](rng).split()
            tokens.extend(entity)
            tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1))
        else:
            tokens.append(word)
            tags.append("O")
    return Sentence(tuple(tokens), tuple(tags))


def _person(rng: random.Random) -> str:
    first = rng.choice(_FIRST)
    return first if rng.random() < 0.3 else f"{first} {rng.choice(_LAST)}"


def _date(rng: random.Random) -> str:
    month = rng.choice(_MONTHS)
    year = rng.randint(1990, 2030)
    shape = rng.randrange(4)
    if shape == 0:
        return f"{rng.randint(1, 28)} {month} {year}"
    if shape == 1:
        return f"{month} {year}"
    if shape == 2:
        return rng.choice(_DAYS)
    return str(year)


_ENTITY_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "PER": _person,
    "ORG": lambda rng: rng.choice(_ORG),
    "LOC": lambda rng: rng.choice(_LOC),
    "DATE": _date,
}
