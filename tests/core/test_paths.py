"""Output paths never leave the output directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpoq.core.paths import OutputLayout, check_component, safe_join, safe_relative
from hpoq.errors import InputError, UnsafeNameError

BAD_COMPONENTS = [
    pytest.param("", id="empty"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param("../x", id="traversal"),
    pytest.param("a/b", id="slash"),
    pytest.param("/", id="root"),
    pytest.param("/etc", id="absolute"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("..\\x", id="backslash-traversal"),
    pytest.param("a\x00b", id="nul"),
    pytest.param(" a", id="leading-space"),
    pytest.param("a ", id="trailing-space"),
    pytest.param(" ", id="blank"),
    pytest.param("a\n", id="newline"),
]


@pytest.mark.parametrize("part", ["a", "hpo_bert_v2", "trial_3", "x.json", "...", "a..b"])
def test_good_components(part: str) -> None:
    assert check_component(part) == part


@pytest.mark.parametrize("part", BAD_COMPONENTS)
def test_bad_components(part: str) -> None:
    with pytest.raises(UnsafeNameError, match=r"^backbone: "):
        check_component(part, "backbone")


def test_unsafe_name_error_is_input_error() -> None:
    assert issubclass(UnsafeNameError, InputError)


def test_safe_join_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a", "b", "c.json") == tmp_path / "a" / "b" / "c.json"
    assert safe_join(tmp_path) == tmp_path


@pytest.mark.parametrize("part", BAD_COMPONENTS)
def test_safe_join_rejects_traversal(tmp_path: Path, part: str) -> None:
    with pytest.raises(UnsafeNameError):
        safe_join(tmp_path, "ok", part)


def test_safe_join_rejects_symlink_escaping_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeNameError, match="resolves outside"):
        safe_join(root, "link")
    with pytest.raises(UnsafeNameError, match="resolves outside"):
        safe_join(root, "link", "file.json")


def test_safe_join_rejects_symlink_to_parent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "up").symlink_to("..", target_is_directory=True)
    with pytest.raises(UnsafeNameError):
        safe_join(root, "up", "secret")


def test_safe_join_allows_symlink_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    assert safe_join(root, "alias", "x") == root / "alias" / "x"


def test_safe_join_with_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "root").symlink_to(real, target_is_directory=True)
    assert safe_join(tmp_path / "root", "a") == tmp_path / "root" / "a"


@pytest.mark.parametrize("relative", ["a", "a/b/c.conll", "a//b", "a\\b"])
def test_safe_relative_inside(tmp_path: Path, relative: str) -> None:
    path = safe_relative(tmp_path, relative)
    assert tmp_path.resolve() in path.resolve().parents


@pytest.mark.parametrize(
    "relative",
    [
        "",
        "/",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "./a",
        "a/./b",
        "..\\x",
        "a/\x00",
        "a/ b",
    ],
)
def test_safe_relative_rejects(tmp_path: Path, relative: str) -> None:
    with pytest.raises(UnsafeNameError):
        safe_relative(tmp_path, relative)


# --- layout ---------------------------------------------------------------------------


def test_layout(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path, "local")
    assert layout.hpo_dir("bert") == tmp_path / "local" / "hpo" / "bert"
    assert layout.study_dir("bert", "hpo_bert_v2") == tmp_path / "local" / "hpo" / "bert" / (
        "hpo_bert_v2"
    )
    assert layout.trial_dir("bert", "hpo_bert", 7) == (
        tmp_path / "local" / "hpo" / "bert" / "hpo_bert" / "trial_7"
    )
    assert layout.benchmark_cache_dir() == tmp_path / "local" / "benchmarks" / "cache"
    assert layout.mlflow_db() == tmp_path / "mlflow.db"
    assert layout.redis_dir() == tmp_path / "redis"


@pytest.mark.parametrize("platform", ["", "..", "../x", "a/b", "."])
def test_layout_rejects_bad_platform(tmp_path: Path, platform: str) -> None:
    with pytest.raises(UnsafeNameError, match=r"^platform: "):
        OutputLayout(tmp_path, platform)


@pytest.mark.parametrize("name", ["..", "../../etc", "/abs", "", ".", "a/b", "a\x00"])
def test_layout_rejects_bad_backbone_and_study(tmp_path: Path, name: str) -> None:
    layout = OutputLayout(tmp_path, "local")
    with pytest.raises(UnsafeNameError, match=r"^backbone: "):
        layout.hpo_dir(name)
    with pytest.raises(UnsafeNameError, match=r"^study_name: "):
        layout.study_dir("bert", name)


def test_layout_refuses_symlinked_backbone_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "out"
    (root / "local" / "hpo").mkdir(parents=True)
    (root / "local" / "hpo" / "bert").symlink_to(outside, target_is_directory=True)
    layout = OutputLayout(root, "local")
    with pytest.raises(UnsafeNameError):
        layout.study_dir("bert", "hpo_bert")


# --- adversarial names across every path the layout builds ------------------------------

ADVERSARIAL = [
    "..",
    "../..",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../..",
    "..\\..\\windows",
    "\\\\server\\share",
    "C:\\temp",
    "~",
    "~root",
    "$HOME",
    "%2e%2e",
    "..%2f..%2f",
    "\u2024\u2024",  # one-dot leaders that render as '..'
    "\uff0e\uff0e",  # fullwidth full stops
    "\uff0e\uff0e\uff0fetc",  # fullwidth '../etc'
    "..\u2215etc",  # division slash
    "..\u200b",  # zero-width space after '..'
    "a\rb",
    "a\x00/../b",
    "x" * 300,
]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_no_name_builds_a_path_outside_the_output_directory(tmp_path: Path, name: str) -> None:
    """Whatever a config or a job names, a layout path is refused or lies inside the root."""
    from hpoq.core.benchmark_index import cache_path

    root = tmp_path / "out"
    layout = OutputLayout(root, "local")
    builders = [
        lambda: layout.hpo_dir(name),
        lambda: layout.study_dir("bert", name),
        lambda: layout.study_dir(name, "hpo_bert"),
        lambda: layout.trial_dir(name, name, 1),
        lambda: safe_relative(layout.hpo_dir("bert"), name, "storage_path"),
        lambda: cache_path(layout, name),
    ]
    for build in builders:
        try:
            path = build()
        except UnsafeNameError:
            continue
        resolved = path.resolve()
        assert resolved == root.resolve() or root.resolve() in resolved.parents, (name, path)
