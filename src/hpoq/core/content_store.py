"""Files by content: publish a directory to the MLflow artifact store once per content hash,
and fetch it into a local cache verified by that hash.

What a job needs from disk (a dataset's files, a local model directory, a trial's
checkpoint) travels this way, so no worker needs the producer's filesystem.

- A *manifest* lists every file of a tree (relative POSIX path, sha256, size). Its
  *digest* (sha256 of the manifest's canonical JSON) names the content: the same files
  give the same digest on every host, any changed byte a different one. A job names a
  published tree by its *content address*, `sha256:<digest>`.
- Published content (data, models) is one MLflow run per digest in the experiment
  `hpoq-content`, tagged `hpoq.content.digest`; its files are the run's `files/` artifacts
  and the manifest is `files.manifest.json`. The run is set FINISHED only after every
  file is uploaded, and lookups only accept FINISHED runs, so an interrupted upload is
  never used. Publishing content that is already there uploads nothing.
- A checkpoint is published into its own trial run (`checkpoint/`, with
  `checkpoint.manifest.json`); the tag `hpoq.digest.checkpoint`, set last, names it.
- Fetching downloads into a temporary folder inside the cache, checks the manifest
  against the digest and every file against the manifest, then renames the folder to
  `<cache>/<kind>/<digest>` in one step. A cache entry is therefore complete and verified
  or absent; concurrent fetches on one host each stage their own copy and the first
  rename wins. Entries are never modified afterwards.

Local problems while publishing (a file missing, unreadable, not a regular file) raise
InputError naming the file; an artifact store that refuses raises ServiceError; content
that cannot be found or does not match its digest raises ContentError. MLflow is imported
lazily; this module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from hpoq.core.fingerprints import canonical_json, sha256_hex
from hpoq.errors import ContentError, ContentMismatch, InputError, ServiceError
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

Kind = Literal["data", "models", "checkpoints"]
CONTENT_EXPERIMENT = "hpoq-content"
TAG_DIGEST = "hpoq.content.digest"
TAG_KIND = "hpoq.content.kind"
TAG_LABEL = "hpoq.content.label"
FILES_PATH = "files"
ADDRESS_PREFIX = "sha256:"
MANIFEST_VERSION = 1
CHECKPOINT_ARTIFACT_PATH = "checkpoint"  # where a trial's run holds its checkpoint
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def content_address(digest: str) -> str:
    return f"{ADDRESS_PREFIX}{digest}"


def parse_address(value: str | None) -> str | None:
    """The digest of a content address, None for anything else (a path, a hub id)."""
    if value is None or not value.startswith(ADDRESS_PREFIX):
        return None
    digest = value.removeprefix(ADDRESS_PREFIX)
    return digest if _DIGEST.fullmatch(digest) else None


def is_content_address(value: str | None) -> bool:
    return parse_address(value) is not None


def digest_tag(artifact_path: str) -> str:
    """The run tag naming the digest of the tree a run holds at `artifact_path`."""
    return f"hpoq.digest.{artifact_path}"


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """Every file of a tree: relative POSIX path -> sha256 and size."""

    files: Mapping[str, FileEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "files": {
                path: {"sha256": entry.sha256, "size": entry.size}
                for path, entry in sorted(self.files.items())
            },
        }

    @property
    def digest(self) -> str:
        return sha256_hex(canonical_json(self.to_json()))

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())

    @classmethod
    def from_json(cls, data: Any, where: str) -> Manifest:
        """Parse a downloaded manifest; ContentError names `where` when it is malformed."""
        try:
            if data["version"] != MANIFEST_VERSION:
                raise ValueError(f"version {data['version']!r}")
            files = {
                _checked_relative(path): FileEntry(str(entry["sha256"]), int(entry["size"]))
                for path, entry in data["files"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ContentMismatch(f"{where}: malformed manifest ({exc})") from None
        return cls(files)


def manifest_of(root: Path, names: Iterable[str] | None = None, *, what: str) -> Manifest:
    """Hash the files of `root`: the relative `names`, or (None) every file in the tree
    except names starting with '.'. InputError names the file that cannot be read."""
    if not root.is_dir():
        problem = "does not exist" if not root.exists() else "is not a directory"
        raise InputError(f"{what}: {root} {problem}")
    relative = sorted(set(names)) if names is not None else _walk(root, what)
    if not relative:
        raise InputError(f"{what}: {root} holds no files to publish")
    files: dict[str, FileEntry] = {}
    for raw in relative:
        try:
            name = _checked_relative(raw)
        except ValueError as exc:
            raise InputError(f"{what}: {exc}") from None
        path = root / name
        if not path.is_file():
            problem = "does not exist" if not path.exists() else "is not a regular file"
            raise InputError(f"{what}: {path} {problem}")
        try:
            files[name] = _hash_file(path)
        except OSError as exc:
            raise InputError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    return Manifest(files)


def verify_tree(root: Path, manifest: Manifest, where: str) -> None:
    """Every file of the manifest, with its size and hash, and nothing else."""
    found = set(_walk(root, where, include_hidden=True))
    extra = sorted(found - set(manifest.files))
    if extra:
        raise ContentMismatch(f"{where}: unexpected file {extra[0]!r} (not in the manifest)")
    for name, expected in sorted(manifest.files.items()):
        path = root / name
        if not path.is_file():
            raise ContentMismatch(f"{where}: file {name!r} is missing")
        actual = _hash_file(path)
        if actual != expected:
            raise ContentMismatch(
                f"{where}: file {name!r} does not match its hash "
                f"(expected sha256 {expected.sha256[:16]}... of {expected.size} bytes, "
                f"got {actual.sha256[:16]}... of {actual.size} bytes)"
            )


class ContentStore:
    """Publishes trees to MLflow by content and fetches them into `cache_root`.

    `experiment_id` returns the id of the `hpoq-content` experiment (creating it when
    missing); it is only called when the store has to look something up.
    """

    def __init__(
        self, client: MlflowClient, experiment_id: Callable[[], str], cache_root: Path
    ) -> None:
        self.client = client
        self._experiment_id = experiment_id
        self.cache_root = cache_root

    # -- content (data, models) ------------------------------------------------------------

    def publish(self, kind: Kind, root: Path, manifest: Manifest, label: str) -> bool:
        """Make `manifest`'s files (read from `root`) available under their digest.
        True when they were uploaded now, False when they were there already."""
        digest = manifest.digest
        if self._find_run(digest) is not None:
            return False
        tags = {TAG_DIGEST: digest, TAG_KIND: kind, TAG_LABEL: label[:250]}
        what = f"{kind} {label!r} ({root})"
        try:
            run = self.client.create_run(
                self._experiment_id(), tags=tags, run_name=f"{kind}-{digest[:12]}"
            )
        except Exception as exc:
            raise ServiceError(f"cannot publish {what}: {_describe(exc)}") from None
        run_id = str(run.info.run_id)
        try:
            self._upload(run_id, root, manifest, FILES_PATH, what)
            self.client.set_terminated(run_id, status="FINISHED")
        except BaseException:
            _best_effort_fail(self.client, run_id)
            raise
        log.info("published %s as %s%s", what, ADDRESS_PREFIX, digest)
        return True

    def fetch(self, kind: Kind, digest: str) -> Path:
        """The local directory of published content `digest`, downloaded once per host."""
        target = self._entry(kind, digest)
        if target.is_dir():
            return target
        run_id = self._find_run(digest)
        if run_id is None:
            raise ContentError(
                f"{kind} {content_address(digest)}: not published in MLflow experiment "
                f"{CONTENT_EXPERIMENT!r} (submit the experiment again to publish it)"
            )
        try:
            return self._download_verified(run_id, FILES_PATH, digest, target)
        except ContentMismatch as exc:
            raise ContentMismatch(
                f"{exc}; to publish it anew, delete that run in MLflow experiment "
                f"{CONTENT_EXPERIMENT!r} and submit again"
            ) from None

    def published_run(self, digest: str) -> str | None:
        """The FINISHED run holding content `digest`, or None."""
        return self._find_run(digest)

    # -- trees inside a run (checkpoints) --------------------------------------------------

    def publish_to_run(self, run_id: str, root: Path, artifact_path: str) -> str:
        """Upload the tree `root` as `artifact_path/` of run `run_id`; returns its digest.
        The digest tag is set last: a run without it holds no complete copy."""
        manifest = manifest_of(root, what=f"{artifact_path} of run {run_id}")
        self._upload(run_id, root, manifest, artifact_path, f"{artifact_path} {root}")
        self.client.set_tag(run_id, digest_tag(artifact_path), manifest.digest)
        return manifest.digest

    def fetch_from_run(self, kind: Kind, run_id: str, artifact_path: str) -> Path:
        """The verified local copy of the tree published with `publish_to_run`."""
        try:
            tags = self.client.get_run(run_id).data.tags
        except Exception as exc:
            raise ContentError(
                f"{artifact_path} of run {run_id}: cannot read the run: {_describe(exc)}"
            ) from None
        digest = tags.get(digest_tag(artifact_path))
        if digest is None or not _DIGEST.fullmatch(digest):
            raise ContentError(
                f"{artifact_path} of run {run_id}: the artifact store holds no complete copy "
                f"(tag {digest_tag(artifact_path)!r} is not set)"
            )
        target = self._entry(kind, digest)
        if target.is_dir():
            return target
        return self._download_verified(run_id, artifact_path, digest, target)

    # -- internals -------------------------------------------------------------------------

    def _entry(self, kind: Kind, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise ContentError(f"{kind}: {digest!r} is not a sha256 digest")
        return self.cache_root / kind / digest

    def _find_run(self, digest: str) -> str | None:
        try:
            runs = self.client.search_runs(
                [self._experiment_id()],
                filter_string=(
                    f"tags.`{TAG_DIGEST}` = '{digest}' and attributes.status = 'FINISHED'"
                ),
                order_by=["attributes.start_time ASC"],
                max_results=1,
            )
        except Exception as exc:
            raise ServiceError(
                f"MLflow: cannot look up content {content_address(digest)}: {_describe(exc)}"
            ) from None
        return str(runs[0].info.run_id) if runs else None

    def _upload(
        self, run_id: str, root: Path, manifest: Manifest, artifact_path: str, what: str
    ) -> None:
        for name in sorted(manifest.files):
            parent = PurePosixPath(artifact_path, name).parent.as_posix()
            try:
                self.client.log_artifact(run_id, str(root / name), parent)
            except OSError as exc:
                raise InputError(
                    f"{what}: cannot read {root / name}: {exc.strerror or exc}"
                ) from None
            except Exception as exc:
                raise ServiceError(
                    f"cannot publish {what}: uploading {root / name} failed: {_describe(exc)}"
                ) from None
        try:
            self.client.log_dict(run_id, manifest.to_json(), f"{artifact_path}.manifest.json")
        except Exception as exc:
            raise ServiceError(
                f"cannot publish {what}: uploading its manifest failed: {_describe(exc)}"
            ) from None

    def _download_verified(
        self, run_id: str, artifact_path: str, digest: str, target: Path
    ) -> Path:
        where = f"{content_address(digest)} (artifact {artifact_path!r} of MLflow run {run_id})"
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}.tmp-", dir=target.parent))
        try:
            (staging / "tree").mkdir()
            try:
                manifest_file = self.client.download_artifacts(
                    run_id, f"{artifact_path}.manifest.json", str(staging)
                )
                local = Path(
                    self.client.download_artifacts(run_id, artifact_path, str(staging / "tree"))
                )
            except Exception as exc:
                raise ContentError(f"{where}: download failed: {_describe(exc)}") from None
            try:
                data = json.loads(Path(manifest_file).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ContentMismatch(f"{where}: unreadable manifest ({exc})") from None
            manifest = Manifest.from_json(data, where)
            if manifest.digest != digest:
                raise ContentMismatch(f"{where}: the manifest does not match the digest")
            verify_tree(local, manifest, where)
            try:
                os.rename(local, target)
            except OSError:
                if not target.is_dir():  # a concurrent fetch that won the rename is fine
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("fetched %s into %s", where, target)
        return target


def _hash_file(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(digest.hexdigest(), size)


def _walk(root: Path, what: str, include_hidden: bool = False) -> list[str]:
    """Relative POSIX paths of the files under `root` (symlinks to files followed, as
    MLflow's upload follows them); names starting with '.' skipped unless asked."""
    found: list[str] = []
    for directory, dirs, files in os.walk(root):
        if not include_hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") and not include_hidden:
                continue
            path = Path(directory, name)
            if path.is_symlink() and not path.exists():
                raise InputError(f"{what}: {path} is a broken symbolic link")
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _checked_relative(name: str) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\\" in name or any(p in (".", "..") for p in parts):
        raise ValueError(f"{name!r} is not a relative path inside the tree")
    return PurePosixPath(*parts).as_posix()


def _describe(exc: BaseException) -> str:
    return redact_url(f"{type(exc).__name__}: {exc}")


def _best_effort_fail(client: Any, run_id: str) -> None:
    try:
        client.set_terminated(run_id, status="FAILED")
    except Exception as exc:
        log.warning("could not mark the interrupted upload run %s FAILED: %s", run_id, exc)
