"""Device choice, seeding and mixed precision: the torch settings training and benchmarks share."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext

import torch

from hpoq.config.base import Precision
from hpoq.errors import InputError


def resolve_device(requested: str | None) -> torch.device:
    """'cuda', 'cuda:N', 'cpu', or None / 'auto' for CUDA when available."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert requested is not None
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(f"device {requested!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {requested!r} was requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    """Seed every generator and ask for deterministic kernels: same seed, same device, same run."""
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional for torch; nothing to seed then
        pass
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    # warn_only: an op without a deterministic kernel must not fail a whole trial.
    # CUBLAS_WORKSPACE_CONFIG is deliberately not set: on an H100 it made every forward
    # pass about 3x slower, and with one stream per process cuBLAS is reproducible anyway.
    torch.use_deterministic_algorithms(True, warn_only=True)


def autocast(device: torch.device, precision: Precision | str) -> AbstractContextManager[object]:
    """bf16 autocast for Precision.BF16, nothing for fp32."""
    if Precision(precision) is Precision.BF16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def torch_dtype(precision: Precision | str) -> torch.dtype:
    return torch.bfloat16 if Precision(precision) is Precision.BF16 else torch.float32
