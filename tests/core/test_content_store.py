"""Files by content hash: manifests, publishing once, fetching into a verified cache.

The store is the real one on MLflow's local default (SQLite tracking store, file artifact
root); the tracking-server path is covered end to end in
tests/integration/test_multi_host.py.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from hpoq.config.settings import Settings
from hpoq.core.content_store import (
    CONTENT_EXPERIMENT,
    TAG_DIGEST,
    Manifest,
    content_address,
    digest_tag,
    manifest_of,
    parse_address,
)
from hpoq.core.job_inputs import content_store
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.errors import ContentError, InputError
from tests.factories import seed_mlflow_store


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


FILES = {"config.json": b'{"a": 1}', "weights/model.bin": os.urandom(300_000), "vocab.txt": b"x"}


class Host:
    """One host's view: its own output directory (cache), one shared MLflow store."""

    def __init__(self, output: Path, tracking_uri: str) -> None:
        self.runtime = Runtime.from_settings(
            Settings(output_dir=output, platform="local", MLFLOW_TRACKING_URI=tracking_uri)
        )
        self.client = make_client(tracking_uri)
        self.store = content_store(self.runtime, self.client)

    def content_runs(self) -> list[object]:
        found = self.client.get_experiment_by_name(CONTENT_EXPERIMENT)
        return [] if found is None else list(self.client.search_runs([found.experiment_id]))


@pytest.fixture
def shared(tmp_path: Path, mlflow_template: Path) -> str:
    """The tracking URI of a store every Host of the test shares."""
    seed_mlflow_store(mlflow_template, tmp_path / "mlflow")
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


@pytest.fixture
def producer(tmp_path: Path, shared: str) -> Host:
    return Host(tmp_path / "producer-out", shared)


@pytest.fixture
def worker(tmp_path: Path, shared: str) -> Host:
    return Host(tmp_path / "worker-out", shared)


# --- manifests -------------------------------------------------------------------------


def test_the_digest_depends_on_the_content_only(tmp_path: Path) -> None:
    first = manifest_of(_tree(tmp_path / "a", FILES), what="t")
    second = manifest_of(
        _tree(tmp_path / "elsewhere" / "b", dict(reversed(FILES.items()))), what="t"
    )
    assert first.digest == second.digest and len(first.digest) == 64
    (tmp_path / "a" / "vocab.txt").write_bytes(b"y")
    assert manifest_of(tmp_path / "a", what="t").digest != first.digest
    (tmp_path / "b-renamed").mkdir()
    _tree(tmp_path / "b-renamed", {"config.json": FILES["config.json"]})
    assert manifest_of(tmp_path / "b-renamed", what="t").digest != first.digest


def test_hidden_entries_are_left_out_and_names_select_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m", {**FILES, ".git/objects/x": b"big", ".lock": b""})
    assert set(manifest_of(root, what="t").files) == set(FILES)
    assert set(manifest_of(root, ["vocab.txt"], what="t").files) == {"vocab.txt"}


def test_a_manifest_survives_its_json_form(tmp_path: Path) -> None:
    manifest = manifest_of(_tree(tmp_path, FILES), what="t")
    assert Manifest.from_json(manifest.to_json(), "here").digest == manifest.digest


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 2, "files": {}},
        {"files": {}},
        {"version": 1, "files": {"../escape": {"sha256": "0", "size": 1}}},
        {"version": 1, "files": {"/abs": {"sha256": "0", "size": 1}}},
        {"version": 1, "files": {"a": {"size": 1}}},
        {"version": 1, "files": ["a"]},
    ],
)
def test_a_malformed_manifest_is_refused(bad: object) -> None:
    with pytest.raises(ContentError, match="here: malformed manifest"):
        Manifest.from_json(bad, "here")


def _missing_file(root: Path) -> tuple[list[str] | None, str]:
    return ["vocab.txt", "absent.conll"], "absent.conll does not exist"


def _directory_as_file(root: Path) -> tuple[list[str] | None, str]:
    (root / "split.conll").mkdir()
    return ["split.conll"], "split.conll is not a regular file"


def _broken_link(root: Path) -> tuple[list[str] | None, str]:
    (root / "tokenizer.json").symlink_to(root / "nowhere")
    return None, "tokenizer.json is a broken symbolic link"


def _escaping_name(root: Path) -> tuple[list[str] | None, str]:
    return ["../outside.conll"], "is not a relative path inside the tree"


@pytest.mark.parametrize(
    "breakage", [_missing_file, _directory_as_file, _broken_link, _escaping_name]
)
def test_a_file_that_cannot_be_read_is_bad_input_naming_it(
    tmp_path: Path, breakage: object
) -> None:
    root = _tree(tmp_path / "m", FILES)
    names, message = breakage(root)  # type: ignore[operator]
    with pytest.raises(InputError, match=r"^model 'x': ") as exc:
        manifest_of(root, names, what="model 'x'")
    assert message in str(exc.value)


@pytest.mark.parametrize("make", ["nothing", "file", "empty"])
def test_a_folder_that_is_missing_or_empty_is_bad_input(tmp_path: Path, make: str) -> None:
    root = tmp_path / "model"
    if make == "file":
        root.write_text("x")
    elif make == "empty":
        root.mkdir()
    with pytest.raises(InputError, match=str(root)):
        manifest_of(root, what="model")


# --- publish once, fetch verified ------------------------------------------------------


def test_published_content_reaches_another_host_verified_and_is_published_once(
    tmp_path: Path, producer: Host, worker: Host
) -> None:
    source = _tree(tmp_path / "model", FILES)
    manifest = manifest_of(source, what="model")
    assert producer.store.publish("models", source, manifest, "tiny") is True
    assert producer.store.publish("models", source, manifest, "tiny") is False  # nothing new
    [run] = producer.content_runs()
    assert run.data.tags[TAG_DIGEST] == manifest.digest  # type: ignore[attr-defined]

    fetched = worker.store.fetch("models", manifest.digest)
    assert fetched == worker.runtime.layout.content_cache() / "models" / manifest.digest
    for name, content in FILES.items():
        assert (fetched / name).read_bytes() == content
    assert manifest_of(fetched, what="cache").digest == manifest.digest
    assert sorted(p.name for p in fetched.parent.iterdir()) == [manifest.digest]  # no leftovers
    # A cached entry is used as it is: no second download.
    shutil.rmtree(producer.runtime.layout.root / "mlartifacts")
    assert worker.store.fetch("models", manifest.digest) == fetched


def test_fetching_content_that_was_never_published_names_it(worker: Host) -> None:
    digest = "0" * 64
    with pytest.raises(ContentError, match=f"{content_address(digest)}: not published"):
        worker.store.fetch("data", digest)
    assert not (worker.runtime.layout.content_cache() / "data" / digest).exists()


def _stored_file(host: Host, run_id: str, name: str) -> Path:
    root = host.client.get_run(run_id).info.artifact_uri.removeprefix("file://")
    return Path(root) / name


def _corrupt(path: Path) -> None:
    path.write_bytes(b"flipped" + path.read_bytes()[7:])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _remove(path: Path) -> None:
    path.unlink()


def _add_stray(path: Path) -> None:
    (path.parent / "stray.bin").write_bytes(b"not published")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_corrupt, "file 'weights/model.bin' does not match its hash"),
        (_truncate, "file 'weights/model.bin' does not match its hash"),
        (_remove, "file 'weights/model.bin' is missing"),
        (_add_stray, "unexpected file 'weights/stray.bin'"),
    ],
)
def test_a_download_that_does_not_match_its_hash_fails_and_leaves_no_half_cache(
    tmp_path: Path, producer: Host, worker: Host, damage: object, message: str
) -> None:
    source = _tree(tmp_path / "model", FILES)
    manifest = manifest_of(source, what="model")
    producer.store.publish("models", source, manifest, "tiny")
    run_id = producer.store.published_run(manifest.digest)
    assert run_id is not None
    damage(_stored_file(producer, run_id, "files/weights/model.bin"))  # type: ignore[operator]
    with pytest.raises(ContentError, match=message) as exc:
        worker.store.fetch("models", manifest.digest)
    assert run_id in str(exc.value)
    cache = worker.runtime.layout.content_cache() / "models"
    assert list(cache.iterdir()) == []  # neither the entry nor a staging folder


def test_a_damaged_copy_is_replaced_by_deleting_its_run_and_publishing_again(
    tmp_path: Path, producer: Host, worker: Host
) -> None:
    source = _tree(tmp_path / "model", FILES)
    manifest = manifest_of(source, what="model")
    producer.store.publish("models", source, manifest, "tiny")
    damaged = producer.store.published_run(manifest.digest)
    assert damaged is not None
    _corrupt(_stored_file(producer, damaged, "files/weights/model.bin"))
    with pytest.raises(ContentError, match="delete that run in MLflow experiment"):
        worker.store.fetch("models", manifest.digest)
    producer.client.delete_run(damaged)
    assert producer.store.publish("models", source, manifest, "tiny") is True
    fetched = worker.store.fetch("models", manifest.digest)
    assert (fetched / "weights" / "model.bin").read_bytes() == FILES["weights/model.bin"]


def test_a_tampered_manifest_does_not_pass_for_the_digest(
    tmp_path: Path, producer: Host, worker: Host
) -> None:
    source = _tree(tmp_path / "data", FILES)
    manifest = manifest_of(source, what="data")
    producer.store.publish("data", source, manifest, "ner 1")
    run_id = producer.store.published_run(manifest.digest)
    assert run_id is not None
    stored = _stored_file(producer, run_id, "files.manifest.json")
    stored.write_text(stored.read_text().replace(manifest.files["vocab.txt"].sha256, "f" * 64))
    with pytest.raises(ContentError, match="the manifest does not match the digest"):
        worker.store.fetch("data", manifest.digest)


def test_an_interrupted_upload_is_never_used_and_the_next_publish_completes(
    tmp_path: Path, producer: Host, worker: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _tree(tmp_path / "model", FILES)
    manifest = manifest_of(source, what="model")
    real = MlflowClient.log_artifact
    calls: list[str] = []

    def failing(self: MlflowClient, run_id: str, local_path: str, artifact_path: str) -> None:
        calls.append(local_path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")  # the store's disk, mid-upload
        real(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifact", failing)
    with pytest.raises(InputError):
        producer.store.publish("models", source, manifest, "tiny")
    monkeypatch.setattr(MlflowClient, "log_artifact", real)
    [interrupted] = producer.content_runs()
    assert interrupted.info.status == "FAILED"  # type: ignore[attr-defined]
    with pytest.raises(ContentError, match="not published"):
        worker.store.fetch("models", manifest.digest)

    assert producer.store.publish("models", source, manifest, "tiny") is True
    assert (worker.store.fetch("models", manifest.digest) / "vocab.txt").read_bytes() == b"x"


def _fetch_in_process(
    output: str, uri: str, digest: str, queue: multiprocessing.Queue[str]
) -> None:
    host = Host(Path(output), uri)
    try:
        queue.put(str(host.store.fetch("models", digest)))
    except BaseException as exc:  # reported to the test
        queue.put(f"error: {exc!r}")


def test_concurrent_fetches_on_one_host_leave_one_complete_entry(
    tmp_path: Path, producer: Host, shared: str
) -> None:
    source = _tree(tmp_path / "model", {**FILES, "big.bin": os.urandom(4_000_000)})
    manifest = manifest_of(source, what="model")
    producer.store.publish("models", source, manifest, "tiny")
    output = tmp_path / "one-host"
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    processes = [
        context.Process(
            target=_fetch_in_process, args=(str(output), shared, manifest.digest, queue)
        )
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(60)
    expected = output / "cache" / "models" / manifest.digest
    assert results == [str(expected)] * 4
    assert [p.name for p in expected.parent.iterdir()] == [manifest.digest]
    assert manifest_of(expected, what="cache").digest == manifest.digest


# --- trees inside a run (checkpoints) --------------------------------------------------


def test_a_checkpoint_published_to_its_run_is_fetched_by_digest(
    tmp_path: Path, producer: Host, worker: Host
) -> None:
    checkpoint = _tree(tmp_path / "trial_0" / "checkpoint", FILES)
    experiment_id = producer.client.create_experiment("hpo")
    run_id = producer.client.create_run(experiment_id).info.run_id
    digest = producer.store.publish_to_run(run_id, checkpoint, "checkpoint")
    assert producer.client.get_run(run_id).data.tags[digest_tag("checkpoint")] == digest
    fetched = worker.store.fetch_from_run("checkpoints", run_id, "checkpoint")
    assert fetched == worker.runtime.layout.content_cache() / "checkpoints" / digest
    assert manifest_of(fetched, what="cache").digest == digest


def test_a_run_without_a_complete_checkpoint_upload_says_so(producer: Host, worker: Host) -> None:
    experiment_id = producer.client.create_experiment("hpo")
    run_id = producer.client.create_run(experiment_id).info.run_id
    with pytest.raises(ContentError, match="holds no complete copy"):
        worker.store.fetch_from_run("checkpoints", run_id, "checkpoint")


def test_content_addresses_are_recognised_strictly() -> None:
    digest = "a" * 64
    assert parse_address(content_address(digest)) == digest
    for value in ("sha256:abc", "/models/tiny", "org/name", "sha256:" + "A" * 64, None):
        assert parse_address(value) is None
