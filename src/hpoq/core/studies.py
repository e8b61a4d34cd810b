"""Where Optuna studies live and how to find a backbone's variants in them.

Two layouts:
- a shared storage URL (HPOQ_OPTUNA_STORAGE, e.g. PostgreSQL on a cluster) holding
  every study; a study records its backbone as a user attribute, so a backbone named
  `x_v2` can never be mistaken for variant 2 of `x`;
- the local default: one file per study under its study folder
  (`checkpoint.storage_path`, a file journal or SQLite), safe for several local workers.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpoq.config.hpo import CheckpointConfig
from hpoq.core.paths import OutputLayout, safe_relative
from hpoq.core.variants import VariantRef, find_study_variants

if TYPE_CHECKING:
    import optuna

BACKBONE_ATTR = "hpoq.backbone"
VARIANT_ATTR = "hpoq.variant"


class StudyStore:
    """Opens Optuna storages for study variants. Picklable: storages are rebuilt on demand."""

    def __init__(
        self, layout: OutputLayout, checkpoint: CheckpointConfig, shared_url: str | None = None
    ) -> None:
        self.layout = layout
        self.checkpoint = checkpoint
        self.shared_url = shared_url
        # path -> (identity of the file when opened, storage)
        self._storages: dict[str, tuple[FileIdentity, optuna.storages.BaseStorage]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_storages"] = {}
        state.pop("_shared", None)
        return state

    def storage_file(self, backbone: str, study_name: str) -> Path:
        """The local storage file of a study (unused with a shared URL)."""
        relative = self.checkpoint.storage_path.replace("{study_name}", study_name)
        return safe_relative(self.layout.hpo_dir(backbone), relative, what="storage_path")

    def storage_for(self, backbone: str, study_name: str) -> optuna.storages.BaseStorage:
        if self.shared_url:
            return self._shared
        path = self.storage_file(backbone, study_name)
        key = str(path)
        cached = self._storages.get(key)
        if cached is not None and cached[0] == file_identity(path):
            return cached[1]
        # First use, or the file was deleted or replaced since: a storage that read the old
        # file would go on from the old file's position, so open the new one afresh.
        storage = _open_file_storage(path)
        self._storages[key] = (file_identity(path), storage)
        return storage

    @cached_property
    def _shared(self) -> optuna.storages.BaseStorage:
        import optuna

        assert self.shared_url is not None
        return optuna.storages.RDBStorage(
            self.shared_url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=None
        )

    def study_names(self, backbone: str) -> list[str]:
        """Names of the studies that belong to `backbone`."""
        if self.shared_url:
            return [
                s.study_name
                for s in self._shared.get_all_studies()
                if s.user_attrs.get(BACKBONE_ATTR) == backbone
            ]
        hpo_dir = self.layout.hpo_dir(backbone)
        if not hpo_dir.is_dir():
            return []
        return [
            child.name
            for child in hpo_dir.iterdir()
            if child.is_dir() and self.storage_file(backbone, child.name).is_file()
        ]

    def list_variants(self, backbone: str, base: str) -> list[VariantRef]:
        return find_study_variants(backbone, base, self.study_names(backbone))

    def load(self, ref: VariantRef) -> optuna.Study | None:
        """The study of a variant, or None when it does not exist."""
        import optuna

        if not self.shared_url and not self.storage_file(ref.backbone, ref.study_name).is_file():
            return None
        try:
            return optuna.load_study(
                study_name=ref.study_name, storage=self.storage_for(ref.backbone, ref.study_name)
            )
        except KeyError:
            return None


FileIdentity = tuple[int, int, bytes]


def file_identity(path: Path) -> FileIdentity:
    """What tells one incarnation of a storage file from the next at the same path.

    An inode number is reused as soon as a deleted file is closed, and the file journal is
    closed between reads, so a journal is also told by its first line: the create-study
    record, which holds the random worker id of the process that created the study. A
    SQLite file stays open in the storage's connection pool, so its inode cannot be reused
    while the storage lives."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (-1, -1, b"")
    head = b""
    if path.suffix == ".journal":
        with path.open("rb") as handle:
            head = handle.readline(4096)
    return (stat.st_dev, stat.st_ino, head)


def _open_file_storage(path: Path) -> optuna.storages.BaseStorage:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".db":
        # SQLite: a generous busy timeout so several local workers wait instead of failing.
        return optuna.storages.RDBStorage(
            f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 60}}
        )
    return JournalStorage(JournalFileBackend(str(path)))
