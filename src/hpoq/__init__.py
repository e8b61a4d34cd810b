"""hpoq: numbered HPO study variants on GPU workers, best trials benchmarked exactly once."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hpoq")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
