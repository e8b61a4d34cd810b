"""Variant names (ARCHITECTURE.md, 'Variant names'), for both process types.

Variant 1 is the base name (`hpo_{backbone}` or the configured template filled in; for
final training `final_{backbone}`); variant n > 1 is `{base}_v{n}`; `{base}_v1` is read as
variant 1. The same counter (coordination/variant_counter.py), keyed by the base, numbers
both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hpoq.config.base import check_safe_name
from hpoq.errors import UnsafeNameError

MAX_VARIANT = 1_000_000
FINAL_NAME_TEMPLATE = "final_{backbone}"


@dataclass(frozen=True, order=True)
class VariantRef:
    """One numbered variant of a backbone's study."""

    backbone: str
    variant: int
    study_name: str


def base_study_name(template: str, backbone: str) -> str:
    """Fill `{backbone}` into the study-name template and check the result is a safe name."""
    name = template.replace("{backbone}", backbone)
    try:
        return check_safe_name(name)
    except ValueError as exc:
        raise UnsafeNameError(f"checkpoint.study_name: {exc}") from None


def final_base_name(backbone: str) -> str:
    """Variant 1 of a backbone's final training: `final_{backbone}`."""
    return base_study_name(FINAL_NAME_TEMPLATE, backbone)


def variant_study_name(base: str, variant: int) -> str:
    if not 1 <= variant <= MAX_VARIANT:
        raise ValueError(f"variant must be between 1 and {MAX_VARIANT}, got {variant}")
    return base if variant == 1 else f"{base}_v{variant}"


def parse_variant(base: str, name: str) -> int | None:
    """The variant number `name` denotes for `base`, or None when it is not one of its variants."""
    if name == base:
        return 1
    match = re.fullmatch(re.escape(base) + r"_v([1-9][0-9]{0,6})", name)
    if match is None:
        return None
    number = int(match.group(1))
    return number if number <= MAX_VARIANT else None


def find_existing_variants(base: str, names: Iterable[str]) -> list[int]:
    """Sorted, de-duplicated variant numbers among `names` (study names or folder names)."""
    found = {n for n in (parse_variant(base, name) for name in names) if n is not None}
    return sorted(found)


def find_study_variants(backbone: str, base: str, names: Iterable[str]) -> list[VariantRef]:
    """VariantRefs for every name that is a variant of `base`, lowest number first.

    When both `{base}` and `{base}_v1` exist, the plain base name is variant 1's study.
    """
    chosen: dict[int, str] = {}
    for name in sorted(set(names)):
        number = parse_variant(base, name)
        if number is None:
            continue
        if number not in chosen or name == base:
            chosen[number] = name
    return [VariantRef(backbone, n, chosen[n]) for n in sorted(chosen)]


def next_variant(existing: Iterable[int]) -> int:
    return max(existing, default=0) + 1
