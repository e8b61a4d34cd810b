"""Output paths. Every path built from a config value stays inside the output directory."""

from __future__ import annotations

from pathlib import Path

from hpoq.errors import UnsafeNameError

_FORBIDDEN = ("/", "\\", "\x00")


def check_component(part: str, what: str = "name") -> str:
    """A single path component: not empty, no separators, not '.' or '..'."""
    if not part or part.strip() != part:
        raise UnsafeNameError(f"{what}: {part!r} is empty or has surrounding spaces")
    if part in (".", "..") or any(ch in part for ch in _FORBIDDEN):
        raise UnsafeNameError(f"{what}: {part!r} would leave its directory")
    return part


def safe_join(root: Path, *parts: str, what: str = "name") -> Path:
    """root/part/... where each part is one safe component; refuses anything that escapes."""
    path = root
    for part in parts:
        path = path / check_component(part, what)
    resolved_root = root.resolve()
    resolved = path.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise UnsafeNameError(f"{what}: {'/'.join(parts)!r} resolves outside {root}")
    return path


def safe_relative(root: Path, relative: str, what: str = "path") -> Path:
    """root/relative for a relative path of several components, each checked."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p != ""]
    if not parts or relative.startswith("/"):
        raise UnsafeNameError(f"{what}: {relative!r} must be a non-empty relative path")
    return safe_join(root, *parts, what=what)


class OutputLayout:
    """Where everything lives under the output directory.

    <output>/<platform>/hpo/<backbone>/<study_name>/    study folder (journal, trials, metrics)
    <output>/<platform>/final/<backbone>/<variant_name>/ a final model (checkpoint/, scores)
    <output>/<platform>/benchmarks/cache/                benchmark cache JSON files
    <output>/cache/{data,models,checkpoints}/<digest>/  files fetched by content hash
    <output>/mlflow.db, <output>/redis/                  embedded local services
    """

    def __init__(self, root: Path, platform: str) -> None:
        self.root = root
        self.platform = check_component(platform, "platform")

    def hpo_dir(self, backbone: str) -> Path:
        return safe_join(self.root, self.platform, "hpo", backbone, what="backbone")

    def study_dir(self, backbone: str, study_name: str) -> Path:
        return safe_join(self.hpo_dir(backbone), study_name, what="study_name")

    def trial_dir(self, backbone: str, study_name: str, trial_number: int) -> Path:
        return safe_join(
            self.study_dir(backbone, study_name), f"trial_{trial_number}", what="trial"
        )

    def final_dir(self, backbone: str) -> Path:
        return safe_join(self.root, self.platform, "final", backbone, what="backbone")

    def final_variant_dir(self, backbone: str, name: str) -> Path:
        return safe_join(self.final_dir(backbone), name, what="final variant")

    def benchmark_cache_dir(self) -> Path:
        return safe_join(self.root, self.platform, "benchmarks", "cache")

    def content_cache(self) -> Path:
        """Published files fetched to this host, one verified folder per content digest."""
        return self.root / "cache"

    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    def redis_dir(self) -> Path:
        return self.root / "redis"
