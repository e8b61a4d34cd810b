"""Variant naming: 1 -> base, n -> base_v{n}, base_v1 read as 1."""

from __future__ import annotations

import pytest

from hpoq.core.variants import (
    MAX_VARIANT,
    VariantRef,
    base_study_name,
    find_existing_variants,
    find_study_variants,
    next_variant,
    parse_variant,
    variant_study_name,
)
from hpoq.errors import UnsafeNameError

BASE = "hpo_bert"


def test_variant_one_is_the_base() -> None:
    assert variant_study_name(BASE, 1) == BASE


@pytest.mark.parametrize("n", [2, 3, 10, 99, 12345])
def test_variant_n_is_suffixed(n: int) -> None:
    assert variant_study_name(BASE, n) == f"{BASE}_v{n}"


@pytest.mark.parametrize("n", [0, -1, MAX_VARIANT + 1])
def test_variant_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match="variant must be between"):
        variant_study_name(BASE, n)


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 100, 999_999, MAX_VARIANT])
def test_every_allowed_variant_round_trips(n: int) -> None:
    """A name hpoq creates must be recognised again, or the next allocation reuses it."""
    assert parse_variant(BASE, variant_study_name(BASE, n)) == n


@pytest.mark.parametrize("n", [MAX_VARIANT + 1, 10 * MAX_VARIANT, 10**12])
def test_numbers_above_the_maximum_are_not_variants(n: int) -> None:
    assert parse_variant(BASE, f"{BASE}_v{n}") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (BASE, 1),
        (f"{BASE}_v1", 1),
        (f"{BASE}_v2", 2),
        (f"{BASE}_v10", 10),
        (f"{BASE}_v123", 123),
    ],
)
def test_parse_variant(name: str, expected: int) -> None:
    assert parse_variant(BASE, name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "hpo_bert2",
        "hpo_bertx_v2",
        "hpo_roberta",
        "hpo_roberta_v2",
        "xhpo_bert_v2",
        "hpo_bert_v2x",
        "hpo_bert_v2_v3",
        "hpo_bert_vx",
        "hpo_bert_v",
        "hpo_bert_v0",
        "hpo_bert_v01",
        "hpo_bert_v-1",
        "hpo_bert_v 2",
        "hpo_bert_v2\n",
        "hpo_bert_V2",
        "hpo_bert-v2",
        "hpo_bert_v\u0662",  # Arabic-Indic digit two
        "hpo_bert_v\uff12",  # full-width digit two
        "",
        "hpo_bert ",
    ],
)
def test_names_that_are_not_variants(name: str) -> None:
    assert parse_variant(BASE, name) is None


def test_base_is_taken_literally() -> None:
    # A regex meta-character in the base must not match other characters.
    assert parse_variant("a.b", "axb_v2") is None
    assert parse_variant("a.b", "a.b_v2") == 2


def test_find_existing_variants() -> None:
    names = ["hpo_bert_v3", "hpo_roberta_v2", "hpo_bert", "hpo_bert_v1", "x", "hpo_bert_v01"]
    assert find_existing_variants(BASE, names) == [1, 3]
    assert find_existing_variants(BASE, []) == []
    assert find_existing_variants(BASE, iter(["hpo_bert_v12", "hpo_bert_v2"])) == [2, 12]


@pytest.mark.parametrize(
    "names",
    [
        ["hpo_bert", "hpo_bert_v1", "hpo_bert_v2"],
        ["hpo_bert_v2", "hpo_bert_v1", "hpo_bert"],
        ["hpo_bert_v1", "hpo_bert", "hpo_bert_v2", "hpo_bert"],
    ],
)
def test_find_study_variants_prefers_plain_base_for_variant_one(names: list[str]) -> None:
    assert find_study_variants("bert", BASE, names) == [
        VariantRef("bert", 1, "hpo_bert"),
        VariantRef("bert", 2, "hpo_bert_v2"),
    ]


def test_find_study_variants_uses_v1_when_no_plain_base() -> None:
    refs = find_study_variants("bert", BASE, ["hpo_bert_v1", "hpo_bert_v3", "hpo_bertx"])
    assert refs == [VariantRef("bert", 1, "hpo_bert_v1"), VariantRef("bert", 3, "hpo_bert_v3")]


def test_find_study_variants_sorts_numerically() -> None:
    names = ["hpo_bert_v10", "hpo_bert_v9", "hpo_bert_v2", "hpo_bert"]
    assert [r.variant for r in find_study_variants("bert", BASE, names)] == [1, 2, 9, 10]


def test_find_study_variants_ignores_other_bases() -> None:
    names = ["hpo_roberta", "hpo_roberta_v2", "hpo_bert_vx", "hpo_bert_v0", "hpo_bert_v01"]
    assert find_study_variants("bert", BASE, names) == []


def test_variant_refs_order_by_backbone_then_number() -> None:
    refs = [VariantRef("b", 1, "hpo_b"), VariantRef("a", 2, "hpo_a_v2"), VariantRef("a", 1, "x")]
    assert sorted(refs) == [refs[2], refs[1], refs[0]]


@pytest.mark.parametrize(
    ("existing", "expected"),
    [([], 1), ([1], 2), ([1, 2, 3], 4), ([3, 1], 4), ([2], 3)],
)
def test_next_variant(existing: list[int], expected: int) -> None:
    assert next_variant(existing) == expected
    assert next_variant(iter(existing)) == expected


def test_base_study_name() -> None:
    assert base_study_name("hpo_{backbone}", "bert") == "hpo_bert"
    assert base_study_name("{backbone}-search", "tiny-bert") == "tiny-bert-search"


@pytest.mark.parametrize(
    ("template", "backbone"),
    [
        ("../{backbone}", "bert"),
        ("HPO_{backbone}", "bert"),
        ("hpo_{backbone}", "a/b"),
        ("{backbone}", ""),
        ("hpo_{backbone}", "x" * 64),
    ],
)
def test_base_study_name_rejects_unsafe_results(template: str, backbone: str) -> None:
    with pytest.raises(UnsafeNameError, match=r"^checkpoint\.study_name: "):
        base_study_name(template, backbone)
