"""Platform detection from environment markers, with an override."""

from __future__ import annotations

import pytest

from hpoq.core.platform import detect_platform
from hpoq.errors import UnsafeNameError


def test_no_markers_is_local() -> None:
    assert detect_platform({}) == "local"
    assert detect_platform({"PATH": "/usr/bin", "HOME": "/root"}) == "local"


@pytest.mark.parametrize(
    ("marker", "platform"),
    [
        ("COLAB_RELEASE_TAG", "colab"),
        ("COLAB_GPU", "colab"),
        ("KAGGLE_KERNEL_RUN_TYPE", "kaggle"),
        ("KAGGLE_URL_BASE", "kaggle"),
        ("AZUREML_RUN_ID", "azureml"),
        ("AZUREML_EXPERIMENT_ID", "azureml"),
    ],
)
def test_markers(marker: str, platform: str) -> None:
    assert detect_platform({marker: "1"}) == platform


def test_empty_marker_is_ignored() -> None:
    assert detect_platform({"COLAB_GPU": ""}) == "local"


def test_override_beats_markers() -> None:
    env = {"COLAB_GPU": "1", "KAGGLE_URL_BASE": "x"}
    assert detect_platform(env, override="azureml") == "azureml"
    assert detect_platform(env, override="my-cluster") == "my-cluster"


def test_hpoq_platform_variable_beats_markers() -> None:
    assert detect_platform({"HPOQ_PLATFORM": "lab", "COLAB_GPU": "1"}) == "lab"


def test_argument_beats_variable() -> None:
    assert detect_platform({"HPOQ_PLATFORM": "lab"}, override="cloud") == "cloud"


@pytest.mark.parametrize(
    "bad", ["../x", "..", "a/b", "Colab", "a b", "k\u0430ggle", "-x", "a" * 65]
)
def test_invalid_override_raises(bad: str) -> None:
    with pytest.raises(UnsafeNameError, match=r"^HPOQ_PLATFORM: "):
        detect_platform({}, override=bad)
    with pytest.raises(UnsafeNameError, match=r"^HPOQ_PLATFORM: "):
        detect_platform({"HPOQ_PLATFORM": bad})


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HPOQ_PLATFORM",
        "COLAB_RELEASE_TAG",
        "COLAB_GPU",
        "KAGGLE_KERNEL_RUN_TYPE",
        "KAGGLE_URL_BASE",
        "AZUREML_RUN_ID",
        "AZUREML_EXPERIMENT_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    assert detect_platform() == "local"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert detect_platform() == "kaggle"
    monkeypatch.setenv("HPOQ_PLATFORM", "mine")
    assert detect_platform() == "mine"
